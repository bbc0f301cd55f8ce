"""What a request used, as the handler hands it to the gate at the end of the request.

A plain value: the handler builds it once, when the body ends (or when it
knows the request reached no model), and attaches it to the request's
:class:`app.middleware.RequestInfo`; the outer ASGI layer then passes the
request to :meth:`app.gate.Gate.release`, which books it. Nothing in it is
an upstream's raw object: counts an upstream got wrong (strings, negatives,
booleans) are 0 here, so the ledger, the budget and the access log agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from toolrelay.app.jsonbody import JSONValue


@dataclass(frozen=True, slots=True)
class RequestUsage:
    """Tokens a request used (an agent run: all its model calls)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    # Prompt tokens the upstream served from its cache (``prompt_tokens_details.cached_tokens``),
    # at most ``prompt_tokens``; priced at the model's cached-input price.
    cached_tokens: int = 0
    # Counted by us (tiktoken), not reported by the upstream.
    estimated: bool = False
    # Replayed from the response cache (app/cache/): no model was asked, so it costs nothing.
    cache_hit: bool = False

    @classmethod
    def from_report(cls, report: JSONValue | Mapping[str, Any], *, estimated: bool = False) -> RequestUsage | None:
        """The usage of an OpenAI ``usage`` object; None when ``report`` is not an object at all."""
        if not isinstance(report, Mapping):
            return None
        prompt = token_count(report.get("prompt_tokens"))
        details: JSONValue | Mapping[str, Any] = report.get("prompt_tokens_details")
        cached = min(prompt, token_count(details.get("cached_tokens"))) if isinstance(details, Mapping) else 0
        return cls(prompt, token_count(report.get("completion_tokens")), cached, estimated)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def token_count(value: Any) -> int:
    """A token count from an upstream's usage object, which is not always well-formed (0 when it is not a positive integer)."""
    return value if type(value) is int and value > 0 else 0
