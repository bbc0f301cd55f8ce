"""Which chat requests the cache may answer, and the key of one.

A key is the SHA-256 of the caller's scope (its API key id; one scope on a
server without keys), the upstream and model the request resolves to (after
aliases, so ``gpt-4`` and the model it names share entries) and the request
body with sorted keys, less the fields that do not change what the model
writes: how the answer is delivered (``stream``, ``stream_options``: a
streamed request replays an entry a non-streamed one stored, and the other
way round) and who it is for (``user``, ``metadata``, ``store``,
``prompt_cache_key``, ``safety_identifier``). Every other field, known to
toolrelay or not, is part of the key: two requests share an entry only when
an upstream would see the same sampling request.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

__all__ = ["CacheDirectives", "cacheable", "directives", "request_key"]

# Fields that change how or to whom the answer is delivered, not what it says.
_NOT_IN_KEY = frozenset({"model", "stream", "stream_options", "user", "metadata", "store", "prompt_cache_key", "safety_identifier"})


def cacheable(payload: dict[str, Any]) -> bool:
    """Whether the answer is meant to be repeatable: ``temperature`` 0 or a ``seed``.

    Anything else samples afresh on every call, which is what the client
    asked for (the default temperature is 1).
    """
    seed = payload.get("seed")
    if type(seed) is int:
        return True
    temperature = payload.get("temperature")
    return type(temperature) in (int, float) and temperature == 0


def request_key(payload: dict[str, Any], *, scope: str, upstream: str, model: str) -> str | None:
    """The entry's key (hex SHA-256); ``model`` is the upstream model id the request resolved to.

    None for a body orjson cannot write with sorted keys (an integer beyond 64
    bits, which the strict parser lets through): such a request is not cached.
    """
    canonical = {name: value for name, value in payload.items() if name not in _NOT_IN_KEY}
    temperature = canonical.get("temperature")
    if type(temperature) is int:
        canonical["temperature"] = float(temperature)  # 0 and 0.0 are one request
    try:
        body = orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        return None
    digest = hashlib.sha256(orjson.dumps([scope, upstream, model]))
    digest.update(body)
    return digest.hexdigest()


class CacheDirectives:
    """What the client's ``cache-control`` header allows: reading an entry, writing one."""

    __slots__ = ("read", "write")

    def __init__(self, read: bool, write: bool) -> None:
        self.read = read
        self.write = write


_BOTH = CacheDirectives(read=True, write=True)
_REFRESH = CacheDirectives(read=False, write=True)
_NEITHER = CacheDirectives(read=False, write=False)


def directives(header: str | None) -> CacheDirectives:
    """``no-cache``: do not answer from the cache (the fresh answer replaces the entry); ``no-store``:
    neither read nor write, as in HTTP. Other directives (``max-age``...) are ignored."""
    if not header:
        return _BOTH
    names = {part.split("=", 1)[0].strip().lower() for part in header.split(",")}
    if "no-store" in names:
        return _NEITHER
    if "no-cache" in names:
        return _REFRESH
    return _BOTH
