"""Model-facing names for MCP tools: ``<server>__<tool>``, valid and unique.

OpenAI function names must match ``^[a-zA-Z0-9_-]{1,64}$``; MCP tool and
server names may hold anything (dots, slashes, spaces, any length). Names are
rewritten into that charset, cut to 64 characters, and made unique with a
short digest of the original pair when rewriting or cutting made two collide,
so a server cannot shadow a built-in or another server's tool by its choice of name.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection

__all__ = ["MAX_NAME_CHARS", "SEPARATOR", "tool_name"]

MAX_NAME_CHARS = 64
SEPARATOR = "__"
_INVALID = re.compile(r"[^a-zA-Z0-9_-]+")


def _clean(text: str) -> str:
    return _INVALID.sub("_", text).strip("_") or "x"


def _digest(server: str, tool: str) -> str:
    return hashlib.sha256(f"{server}\0{tool}".encode()).hexdigest()[:8]


def tool_name(server: str, tool: str, taken: Collection[str]) -> str:
    """The name ``tool`` of ``server`` is offered under, not in ``taken``."""
    name = f"{_clean(server)}{SEPARATOR}{_clean(tool)}"
    if len(name) <= MAX_NAME_CHARS and name not in taken:
        return name
    suffix = "_" + _digest(server, tool)
    name = name[: MAX_NAME_CHARS - len(suffix)] + suffix
    counter = 1
    while name in taken:
        extra = f"_{counter}"
        name = name[: MAX_NAME_CHARS - len(suffix) - len(extra)] + suffix + extra
        counter += 1
    return name
