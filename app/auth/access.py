"""Which model ids a key may use: exact ids and ``*`` patterns.

``*`` matches any run of characters, ``/`` included, so ``agent/*`` is every
agent id and ``*`` is everything. Patterns match the id the client names
(``agent/gpt-4o``, an alias), never what it resolves to, so an operator's
list reads exactly like the client's ``model`` field and ``/v1/models``.
The two spellings of an agent id are one id here: ``agent:<m>`` is read as
``agent/<m>`` on both sides, so ``agent/*`` admits ``agent:gpt-4o`` and a
pattern written ``agent:*`` admits ``agent/gpt-4o``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from toolrelay.app.model_ids import canonical_model_id


class ModelAccess:
    __slots__ = ("patterns", "_exact", "_regex", "_cache", "everything")

    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns = tuple(p.strip() for p in patterns if p and p.strip())
        self.everything = not self.patterns or "*" in self.patterns
        canonical = [canonical_model_id(p) for p in self.patterns]
        self._exact = frozenset(p for p in canonical if "*" not in p)
        wild = [p for p in canonical if "*" in p]
        self._regex = re.compile("|".join("(?:" + ".*".join(re.escape(part) for part in p.split("*")) + ")" for p in wild)) if wild else None
        # Clients name few distinct models; remember answers (bounded).
        self._cache: dict[str, bool] = {}

    def allows(self, model: str) -> bool:
        if self.everything:
            return True
        answer = self._cache.get(model)
        if answer is None:
            canonical = canonical_model_id(model)
            answer = canonical in self._exact or (self._regex is not None and self._regex.fullmatch(canonical) is not None)
            if len(self._cache) < 4096:
                self._cache[model] = answer
        return answer
