"""The spellings of agent model ids, read in one place.

``agent/<m>`` runs the agent loop on model ``<m>``. ``agent:<m>`` is the same
id spelled without ``/``: clients that read ``vendor/model`` as "route to
vendor" (the OpenAI Agents SDK's default ``MultiProvider``, LiteLLM) refuse
``agent/x`` before sending it and pass ``agent:x`` through untouched. Both
spellings are one model for routing, access control, limits, the ledger and
metrics, which all see the canonical ``agent/<m>``; answers echo the client's.

Imports nothing, so every layer (the router, the gate's allow-lists, the
metrics) can read ids through it without an import cycle.
"""

from __future__ import annotations

__all__ = ["AGENT_ALIAS_PREFIX", "AGENT_PREFIX", "canonical_model_id", "split_agent_model"]

AGENT_PREFIX = "agent/"
AGENT_ALIAS_PREFIX = "agent:"
_AGENT_PREFIXES = (AGENT_PREFIX, AGENT_ALIAS_PREFIX)
_PREFIX_LEN = len(AGENT_PREFIX)  # the alias has the same length


def split_agent_model(model: str) -> tuple[bool, str]:
    """``(is_agent, base model)`` for a model id a client names: ``agent:x`` and ``agent/x`` give ``(True, "x")``."""
    if model.startswith(_AGENT_PREFIXES):
        return True, model[_PREFIX_LEN:]
    return False, model


def canonical_model_id(model: str) -> str:
    """The id the books use: ``agent:<m>`` becomes ``agent/<m>``, anything else is unchanged."""
    if model.startswith(AGENT_ALIAS_PREFIX):
        return AGENT_PREFIX + model[_PREFIX_LEN:]
    return model
