"""Calls that wait for the client's approval (MCP ``require_approval``), and the client's answer.

A run that reaches such a call pauses exactly as it does on a client
function call (one continuation, agent/continuations.py): the call gets an
unguessable id the client sees (``mcpr_...``), which keys the paused run.
The client's answer comes back as a ``role: "tool"`` message for that id whose
content is one of the two markers below (app/responses turns an
``mcp_approval_response`` into it); on resume the loop runs an approved call,
with the arguments of the stored run (never the client's), and tells the
model a denied one did not run.
"""

from __future__ import annotations

__all__ = ["APPROVED", "DENIED", "denied_text"]

APPROVED = "[approval: approved]"
DENIED = "[approval: denied]"


def denied_text(tool: str, reason: str | None = None) -> str:
    """What the model reads for a call the client did not approve."""
    return f"The user did not approve this call of {tool}; it was not run." + (f" Reason given: {reason}" if reason else "")
