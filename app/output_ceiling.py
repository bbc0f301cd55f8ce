"""The output-token ceiling: ``[limits] max_output_tokens`` and a key's own ``max_output_tokens``.

A request asking for more completion tokens than the ceiling is clamped to it,
and one asking for none gets it, before admission estimates the request: the
tokens-per-minute reservation, the cost cap and the budget hold then count
the ceiling, not ``completion_estimate_tokens``. Clamping, not refusing, is
what OpenAI-compatible gateways do with a too-large ``max_tokens``: the
answer stops at the ceiling with ``finish_reason: "length"``, exactly as if
the client had asked for that much, so no client needs to learn our number.

The payload is the one the route sends upstream (chat, the translated
Responses body, each agent step copies it), or the view the gate reads of a
legacy completion or a passed-through Responses request, whose route copies
the value back (:func:`output_limit`).
"""

from __future__ import annotations

from typing import Any

__all__ = ["apply_output_ceiling", "ceiling_field", "output_limit"]

_FIELDS = ("max_completion_tokens", "max_tokens")


def ceiling_field(provider_kind: str) -> str:
    """The field a ceiling is written to when the request names none.

    OpenAI's reasoning models refuse ``max_tokens`` ("use max_completion_tokens");
    the Anthropic and Gemini translations read either; local servers
    (llama.cpp, Ollama, vLLM) all read ``max_tokens``.
    """
    return "max_tokens" if provider_kind == "local" else "max_completion_tokens"


def apply_output_ceiling(payload: dict[str, Any], ceiling: int, field: str) -> None:
    """Clamp the request's completion-token fields to ``ceiling``; set ``field`` to it when it has none."""
    present = False
    for name in _FIELDS:
        value = payload.get(name)
        if value is None:
            continue
        present = True
        if isinstance(value, int) and not isinstance(value, bool) and value > ceiling:
            payload[name] = ceiling
    if not present:
        payload[field] = ceiling


def output_limit(view: dict[str, Any]) -> int | None:
    """The completion tokens the gate's view of a request allows after admission (None: no limit set)."""
    for name in _FIELDS:
        value = view.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None
