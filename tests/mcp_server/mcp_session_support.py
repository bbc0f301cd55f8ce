"""Types shared by the MCP server tests and their fixtures (not in conftest.py: see tests/mcp/mcp_support.py)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

from mcp import ClientSession

SessionFactory = Callable[[str | None], AbstractAsyncContextManager[ClientSession]]
