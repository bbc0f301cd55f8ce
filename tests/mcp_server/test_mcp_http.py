"""``/mcp`` with the official ``mcp`` client against a real toolrelay (issue 13, MCP server)."""

from __future__ import annotations

import json
import os
import secrets

import httpx
import mcp_types as types
import pytest
from mcp import MCPError
from mcp_session_support import SessionFactory

from fakes.admin import Admin
from fakes.server import RunningServer

BUILTINS = {"current_time", "python", "web_search", "fetch_page", "memory_save", "memory_search", "memory_forget"}


def _mcp_errors(exc: BaseException) -> list[MCPError]:
    """The SDK's errors inside ``exc`` (its transports raise them wrapped in task-group exception groups)."""
    if isinstance(exc, MCPError):
        return [exc]
    if isinstance(exc, BaseExceptionGroup):
        return [e for inner in exc.exceptions for e in _mcp_errors(inner)]
    return []


def _text(result: types.CallToolResult) -> str:
    return "".join(block.text for block in result.content if isinstance(block, types.TextContent))


async def test_lists_the_builtin_tools_with_their_schemas(admin: Admin, mcp_session: SessionFactory) -> None:
    _, key = admin.create_key("lister")
    async with mcp_session(key) as session:
        listed = await session.list_tools()
    by_name = {tool.name: tool for tool in listed.tools}
    assert set(by_name) == BUILTINS
    assert by_name["python"].input_schema["required"] == ["code"]
    assert "sandbox" in (by_name["python"].description or "")


async def test_python_runs_in_the_sandbox(admin: Admin, mcp_session: SessionFactory) -> None:
    _, key = admin.create_key("coder")
    async with mcp_session(key) as session:
        result = await session.call_tool("python", {"code": "import os\nprint(sum(range(10**6)), os.getuid())"})
    assert result.is_error is False, _text(result)
    total, uid = _text(result).removeprefix("stdout:").split()
    assert total == "499999500000"  # computed in the sandbox, not by this test
    assert int(uid) != os.getuid()  # the sandbox's own uid, not the server's


async def test_invalid_arguments_are_refused_before_the_tool_runs(admin: Admin, mcp_session: SessionFactory) -> None:
    _, key = admin.create_key("hostile")
    async with mcp_session(key) as session:
        wrong_type = await session.call_tool("python", {"code": 12})
        extra = await session.call_tool("current_time", {"timezone": "UTC", "shell": "rm -rf /"})
        unknown = await session.call_tool("not_a_tool", {})
    assert wrong_type.is_error and "invalid arguments" in _text(wrong_type)
    assert extra.is_error and "shell" in _text(extra)
    assert unknown.is_error and "no tool named 'not_a_tool'" in _text(unknown)


async def test_memory_is_saved_then_found_and_scoped_to_the_key(admin: Admin, mcp_session: SessionFactory) -> None:
    _, key_a = admin.create_key("alice")
    _, key_b = admin.create_key("bob")
    word = "zebra" + secrets.token_hex(4)
    async with mcp_session(key_a) as session:
        saved = await session.call_tool("memory_save", {"text": f"Alice's favourite animal is the {word}"})
        assert saved.is_error is False, _text(saved)
        found = await session.call_tool("memory_search", {"query": word})
    assert word in _text(found)
    memory_id = json.loads(_text(saved))["memory"]["id"]
    async with mcp_session(key_b) as session:
        other = await session.call_tool("memory_search", {"query": word})
        forget = await session.call_tool("memory_forget", {"id": memory_id})
    assert word not in _text(other)
    assert json.loads(_text(other))["results"] == []
    assert forget.is_error, "key B deleted key A's memory by id"
    async with mcp_session(key_a) as session:
        still = await session.call_tool("memory_search", {"query": word})
    assert word in _text(still)


@pytest.mark.parametrize("key", [None, "tr-nokey-0000000000000000000000000000", "wrong"])
async def test_no_key_or_a_wrong_key_is_401(mcp_relay: RunningServer, mcp_session: SessionFactory, key: str | None) -> None:
    headers = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
    if key:
        headers["authorization"] = f"Bearer {key}"
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.post(mcp_relay.url("/mcp"), headers=headers, json=body)
    assert response.status_code == 401, response.text
    assert response.json()["error"]["type"] in ("authentication_error", "invalid_request_error"), response.text
    # The SDK client fails to connect rather than seeing tools.
    with pytest.raises(BaseException) as raised:
        async with mcp_session(key) as session:
            await session.list_tools()
    assert _mcp_errors(raised.value), raised.value


def test_a_cross_origin_browser_request_is_refused(admin: Admin, mcp_relay: RunningServer) -> None:
    _, key = admin.create_key("browser")
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "current_time", "arguments": {}}}
    headers = {"authorization": f"Bearer {key}", "accept": "application/json, text/event-stream"}
    for browser in ({"origin": "https://evil.example"}, {"sec-fetch-site": "cross-site"}):
        response = httpx.post(mcp_relay.url("/mcp"), headers=headers | browser, json=body, timeout=10)
        assert response.status_code == 403, response.text
        assert response.json()["error"]["code"] == "origin_not_allowed"
    # A form post (no CORS preflight) never reaches the server either.
    form = httpx.post(mcp_relay.url("/mcp"), headers=headers | {"content-type": "text/plain"}, content=json.dumps(body), timeout=10)
    assert form.status_code == 415


def test_strict_json_and_size_bounds(admin: Admin, mcp_relay: RunningServer) -> None:
    _, key = admin.create_key("bounds")
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json", "accept": "application/json, text/event-stream"}
    nan = b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "python", "arguments": {"code": NaN}}}'
    response = httpx.post(mcp_relay.url("/mcp"), headers=headers, content=nan, timeout=10)
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_json"
    huge = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "python", "arguments": {"code": "#" * (2 << 20)}}})
    response = httpx.post(mcp_relay.url("/mcp"), headers=headers, content=huge, timeout=10)
    assert response.status_code == 413
    stream = httpx.get(mcp_relay.url("/mcp"), headers=headers | {"accept": "text/event-stream"}, timeout=10)
    assert stream.status_code == 405


async def test_every_tool_call_has_a_ledger_row(admin: Admin, mcp_session: SessionFactory) -> None:
    key_id, key = admin.create_key("ledger")
    async with mcp_session(key) as session:
        await session.call_tool("current_time", {"timezone": "Europe/Paris"})
        await session.call_tool("current_time", {"timezone": "Not/AZone"})
    # initialize, the initialized notification, two calls: each HTTP request is booked.
    rows = admin.usage_rows(key_id, count=4)
    assert {r.get("mode") for r in rows} == {"mcp"}, rows
    calls = [r for r in rows if r.get("model") == "tool:current_time"]
    assert len(calls) == 2, rows
    assert sorted(str(r.get("error_code")) for r in calls) == ["None", "tool_error"]
    assert all(r["mode"] == "mcp" and r["status"] == 200 for r in calls)


async def test_requests_per_minute_apply(admin: Admin, mcp_session: SessionFactory) -> None:
    _, key = admin.create_key("limited", rpm=4)
    calls = 0
    with pytest.raises(BaseException) as raised:
        # initialize, its notification and the client's probe for a GET stream (405) count too
        async with mcp_session(key) as session:
            for _ in range(5):
                await session.call_tool("current_time", {})
                calls += 1
    assert 1 <= calls <= 2 and _mcp_errors(raised.value), raised.value
