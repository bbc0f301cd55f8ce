"""MCP on ``/v1/responses`` (agent mode): the request's ``mcp`` tool entries and the MCP items, pure.

- A ``{"type": "mcp", "server_label": ...}`` entry without ``server_url``
  selects an MCP server the operator configured (``[mcp.servers.<label>]``):
  listing any such entry offers the tools of the listed configured servers
  only (none listed: all of them, as in chat agent mode). With ``server_url``
  it is a per-request server (app/responses/mcp_servers.py connects it).
- ``allowed_tools`` (a list, or ``{"tool_names": [...]}``) filters by the
  server's own tool names; ``require_approval`` is ``"always"`` (OpenAI's
  default), ``"never"``, or ``{"never": {"tool_names": [...]}}`` /
  ``{"always": {"tool_names": [...]}}``.
- The response's ``tools`` echo never carries the ``headers`` values (they
  are the client's credentials for its server): each is ``"<redacted>"``, so
  nothing stored holds them.
- The run's pause on a call waiting for approval becomes an
  ``mcp_approval_request`` item; the client's ``mcp_approval_response``
  (and the ``mcp_approval_request`` it passes back with a full input) are
  turned into the chat shapes the paused run is resumed from: a tool call and
  its answer, one of the markers of agent/approvals.py.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, cast

import mcp_types as types

from toolrelay.agent.approvals import APPROVED, DENIED
from toolrelay.app.errors import invalid_request
from toolrelay.app.ids import new_item_id

__all__ = [
    "MCP_ITEM_TYPES",
    "McpEntry",
    "approval_chat_items",
    "list_tools_item",
    "listed_tool",
    "needs_approval",
    "parse_mcp_entry",
    "redacted_entry",
]

#: MCP items a client passes back in ``input`` (its own answers, or our items with a full input).
MCP_ITEM_TYPES = frozenset({"mcp_list_tools", "mcp_approval_request", "mcp_approval_response"})
REDACTED = "<redacted>"


@dataclass(frozen=True, slots=True)
class McpEntry:
    """One ``mcp`` entry of ``tools``, checked."""

    position: int
    label: str
    url: str | None
    headers: dict[str, str]
    #: The server's own tool names offered; None: all.
    allowed: frozenset[str] | None
    #: ("always" | "never", the tool names the rule names, or None for every tool).
    approval: tuple[str, frozenset[str] | None]


def _names(value: Any, param: str) -> frozenset[str]:
    if isinstance(value, dict):
        value = cast("dict[str, Any]", value).get("tool_names")
    if not isinstance(value, list) or not all(isinstance(n, str) for n in cast("list[Any]", value)):
        raise invalid_request(f"Invalid '{param}': expected an array of tool names.", param=param, code="invalid_type")
    return frozenset(cast("list[str]", value))


def _approval(value: Any, param: str) -> tuple[str, frozenset[str] | None]:
    if value is None or value == "always":
        return ("always", None)
    if value == "never":
        return ("never", None)
    if isinstance(value, dict):
        rule = cast("dict[str, Any]", value)
        if set(rule) <= {"always", "never"} and len(rule) == 1:
            kind = next(iter(rule))
            return (kind, _names(rule[kind], f"{param}.{kind}"))
    raise invalid_request(f"Invalid '{param}': expected 'always', 'never', or {{'never': {{'tool_names': [...]}}}}.", param=param, code="invalid_value")


def parse_mcp_entry(position: int, raw: dict[str, Any]) -> McpEntry:
    """A ``tools[position]`` entry of type ``mcp``; a 400 naming the field for what is wrong."""
    param = f"tools[{position}]"
    label = raw.get("server_label")
    if not isinstance(label, str) or not label:
        raise invalid_request(f"Missing required parameter: '{param}.server_label'.", param=f"{param}.server_label", code="missing_required_parameter")
    url = raw.get("server_url")
    if url is not None and (not isinstance(url, str) or not url):
        raise invalid_request(f"Invalid '{param}.server_url': expected a URL.", param=f"{param}.server_url", code="invalid_value")
    headers = raw.get("headers")
    if headers is None:
        headers = {}
    if not isinstance(headers, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in cast("dict[Any, Any]", headers).items()):
        raise invalid_request(f"Invalid '{param}.headers': expected an object of strings.", param=f"{param}.headers", code="invalid_type")
    allowed = raw.get("allowed_tools")
    return McpEntry(
        position=position,
        label=label,
        url=url,
        headers=cast("dict[str, str]", headers),
        allowed=None if allowed is None else _names(allowed, f"{param}.allowed_tools"),
        approval=_approval(raw.get("require_approval"), f"{param}.require_approval"),
    )


def redacted_entry(raw: dict[str, Any]) -> dict[str, Any]:
    """The entry as echoed and stored: header names kept, their values never."""
    headers = raw.get("headers")
    if not isinstance(headers, dict) or not headers:
        return raw
    return {**raw, "headers": dict.fromkeys(cast("dict[str, Any]", headers), REDACTED)}


def needs_approval(entry: McpEntry, tool: str) -> bool:
    """Whether a call of the server's tool ``tool`` waits for the client's approval."""
    kind, names = entry.approval
    if kind == "always":
        return names is None or tool in names
    return names is not None and tool not in names


def listed_tool(name: str, input_schema: Any, description: str | None = None, annotations: types.ToolAnnotations | None = None) -> dict[str, Any]:
    """One tool of an ``mcp_list_tools`` item."""
    entry: dict[str, Any] = {"name": name, "input_schema": input_schema if isinstance(input_schema, dict) else {}}
    if description is not None:
        entry["description"] = description
    if annotations is not None:
        entry["annotations"] = annotations.model_dump(exclude_none=True)
    return entry


def list_tools_item(label: str, tools: Iterable[dict[str, Any]], error: str | None = None) -> dict[str, Any]:
    """The ``mcp_list_tools`` item for a server's tools as offered (after ``allowed_tools``), each from :func:`listed_tool`."""
    item: dict[str, Any] = {"id": new_item_id("mcpl"), "type": "mcp_list_tools", "server_label": label, "tools": list(tools)}
    if error is not None:
        item["error"] = error
    return item


def approval_chat_items(items: Iterable[dict[str, Any]], names: dict[tuple[str, str], str]) -> list[dict[str, Any]]:
    """``items`` with the approval items as the chat translation reads them (function calls and outputs).

    ``names`` maps (server label, the server's tool name) to the name the model
    knows; an approval request whose tool this request does not offer keeps the
    server's name (the paused run restores its own call anyway).
    """
    out: list[dict[str, Any]] = []
    for item in items:
        kind = item.get("type")
        if kind == "mcp_approval_request":
            name = names.get((str(item.get("server_label")), str(item.get("name"))), str(item.get("name") or "mcp_tool"))
            out.append({"type": "function_call", "call_id": item.get("id"), "name": name, "arguments": str(item.get("arguments") or "{}")})
        elif kind == "mcp_approval_response":
            reason = item.get("reason")
            answer = APPROVED if item.get("approve") is True else DENIED + (f" {reason}" if isinstance(reason, str) and reason else "")
            out.append({"type": "function_call_output", "call_id": item.get("approval_request_id"), "output": answer})
        else:
            out.append(item)
    return out
