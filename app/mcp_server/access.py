"""Who may use toolrelay's tools over MCP: the one refusal both transports give."""

from __future__ import annotations

from toolrelay.app.errors import OpenAIError

__all__ = ["not_allowed"]


def not_allowed() -> OpenAIError:
    """403 ``mcp_not_allowed``: the tools are agent mode's, and this key may use no agent model."""
    return OpenAIError(
        403,
        "This API key may not use toolrelay's tools over MCP: its model allow-list admits no agent model.",
        type="invalid_request_error",
        code="mcp_not_allowed",
    )
