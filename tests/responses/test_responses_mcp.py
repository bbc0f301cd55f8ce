"""MCP in the Responses API (agent mode): ``mcp_call`` items with the server's label, ``mcp`` tool entries,
per-request servers behind the operator's switch and the SSRF guard, and the approval flow.

A real toolrelay whose agent has the streamable-HTTP test MCP server
(tests/mcp/mcp_test_server.py, its own process on loopback) configured as
``remote``; the scripted fake upstream plays the model and calls the tools.
Clients: the official openai SDK (its types for the approval items) and
httpx for the raw stream, checked against OpenAI's published schema.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.responses import ResponseOutputItem
from openai.types.responses.response_output_item import McpApprovalRequest, McpCall, McpListTools

from fakes.clients import rest, sdk
from fakes.relays import agent_tree, start_relay
from fakes.server import RunningServer
from fakes.upstream import FakeUpstream, Reply
from fakes.waiting import wait_until

from .schema import check_stream, parse_stream, validate_response

MODEL = "agent:fake-tools"
SERVER_SCRIPT = Path(__file__).resolve().parents[1] / "mcp" / "mcp_test_server.py"
SECRET_HEADER = "Bearer hdr-secret-7f3a9c"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def mcp_url() -> Iterator[str]:
    port = _free_port()
    env = {**os.environ, "TEST_SERVER_NAME": "remote"}
    process = subprocess.Popen([sys.executable, str(SERVER_SCRIPT), "http", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: _accepts(port), timeout=20, what="the MCP test server to listen")
    yield f"http://127.0.0.1:{port}/mcp"
    process.terminate()
    process.wait(10)


def _tree(fake: FakeUpstream, root: Path, mcp_url: str, **mcp: Any) -> dict[str, Any]:
    tree = agent_tree(fake, root / "data", agent={"tool_timeout_seconds": 10})
    tree["mcp"] = {"ping_interval_seconds": 5.0, "servers": {"remote": {"url": mcp_url}}, **mcp}
    return tree


@pytest.fixture(scope="module")
def relay(fake_upstream: FakeUpstream, mcp_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("responses-mcp")
    tree = _tree(fake_upstream, root, mcp_url, allow_request_servers=True, request_server_allow_networks=["127.0.0.1/32"])
    with start_relay(root, tree) as server:
        wait_until(lambda: _remote_ready(server), timeout=20, what="the configured MCP server to be ready")
        yield server


def _remote_ready(server: RunningServer) -> bool:
    with rest(server, key=None) as http:
        return any(s["name"] == "remote" and s["ok"] for s in http.get("/ready").json().get("mcp", []))


@pytest.fixture
def oai(relay: RunningServer) -> Iterator[openai.OpenAI]:
    with sdk(relay, timeout=60.0) as client:
        yield client


@pytest.fixture
def http(relay: RunningServer) -> Iterator[httpx.Client]:
    with rest(relay, timeout=60.0) as client:
        yield client


def script(fake: FakeUpstream, calls: dict[str, list[dict[str, Any]]]) -> None:
    """The model: the user's text picks the first turn's calls; after tool results it answers with them."""

    def respond(body: dict[str, Any]) -> Reply:
        messages = body["messages"]
        if messages[-1]["role"] == "tool":
            return Reply(content="done: " + " | ".join(m["content"] for m in messages if m["role"] == "tool"))
        user = next(m["content"] for m in reversed(messages) if m["role"] == "user")
        return Reply(tool_calls=calls[user]) if user in calls else Reply(content="no tools needed")

    fake.responder = respond


def request_server(mcp_url: str, **extra: Any) -> dict[str, Any]:
    return {"type": "mcp", "server_label": "req", "server_url": mcp_url, "headers": {"Authorization": SECRET_HEADER}, **extra}


def offered(fake: FakeUpstream) -> set[str]:
    return {t["function"]["name"] for t in fake.chat_requests[0].body.get("tools") or ()}


# ---------------------------------------------------------------------------------- configured servers


def test_configured_server_tool_is_an_mcp_call_with_its_label_and_own_name(fake: FakeUpstream, oai: openai.OpenAI) -> None:
    script(fake, {"add": [{"name": "remote__add", "arguments": {"a": 2, "b": 3}}]})
    response = oai.responses.create(model=MODEL, input="add")
    validate_response(response.model_dump(mode="json", exclude_unset=True))
    calls = [item for item in response.output if isinstance(item, McpCall)]
    assert len(calls) == 1, response.output
    call = calls[0]
    assert (call.server_label, call.name, call.output, call.error) == ("remote", "add", "5", None)
    assert json.loads(call.arguments) == {"a": 2, "b": 3}
    assert response.output_text == "done: 5"
    # No mcp entry in tools: every configured server's tools are offered, nothing is listed.
    assert not any(isinstance(item, McpListTools) for item in response.output)
    assert "remote__add" in offered(fake)


def test_listed_configured_server_streams_list_tools_then_the_call(fake: FakeUpstream, http: httpx.Client) -> None:
    script(fake, {"add": [{"name": "remote__add", "arguments": {"a": 1, "b": 1}}]})
    tools = [{"type": "mcp", "server_label": "remote", "allowed_tools": ["add", "echo"], "require_approval": "never"}]
    raw = http.post("/v1/responses", json={"model": MODEL, "input": "add", "tools": tools, "stream": True})
    assert raw.status_code == 200, raw.text
    events = parse_stream(raw.content)
    final = check_stream(events)
    kinds = [e["type"] for e in events]
    assert kinds[2:6] == ["response.output_item.added", "response.mcp_list_tools.in_progress", "response.mcp_list_tools.completed", "response.output_item.done"]
    for kind in ("response.mcp_call.in_progress", "response.mcp_call_arguments.delta", "response.mcp_call_arguments.done", "response.mcp_call.completed"):
        assert kind in kinds
    listing, call = final["output"][0], final["output"][1]
    assert listing["type"] == "mcp_list_tools" and listing["server_label"] == "remote"
    assert sorted(t["name"] for t in listing["tools"]) == ["add", "echo"]
    assert call["type"] == "mcp_call" and call["server_label"] == "remote" and call["name"] == "add" and call["output"] == "2"
    # allowed_tools filtered what the model was offered too.
    assert {n for n in offered(fake) if n.startswith("remote__")} == {"remote__add", "remote__echo"}


def test_failing_mcp_tool_is_a_failed_mcp_call(fake: FakeUpstream, http: httpx.Client) -> None:
    script(fake, {"fail": [{"name": "remote__fail", "arguments": {"reason": "nope"}}]})
    raw = http.post("/v1/responses", json={"model": MODEL, "input": "fail", "stream": True})
    events = parse_stream(raw.content)
    final = check_stream(events)
    assert "response.mcp_call.failed" in [e["type"] for e in events]
    call = next(item for item in final["output"] if item["type"] == "mcp_call")
    assert call["status"] == "failed" and call["error"]["type"] == "mcp_tool_execution_error"


def test_unknown_configured_label_is_a_400(http: httpx.Client) -> None:
    raw = http.post("/v1/responses", json={"model": MODEL, "input": "x", "tools": [{"type": "mcp", "server_label": "nowhere"}]})
    assert raw.status_code == 400
    assert raw.json()["error"]["param"] == "tools[0].server_label"


# ---------------------------------------------------------------------------------- per-request servers


def test_per_request_server_runs_its_tools_and_its_headers_are_never_stored_nor_logged(
    fake: FakeUpstream, oai: openai.OpenAI, http: httpx.Client, mcp_url: str, logs: Any
) -> None:
    script(fake, {"add": [{"name": "req__add", "arguments": {"a": 20, "b": 22}}]})
    response = oai.responses.create(model=MODEL, input="add", tools=[request_server(mcp_url, require_approval="never")])  # type: ignore[list-item]
    assert isinstance(response.output[0], McpListTools) and response.output[0].server_label == "req"
    call = next(item for item in response.output if isinstance(item, McpCall))
    assert (call.server_label, call.name, call.output) == ("req", "add", "42")
    assert "req__add" in offered(fake)
    stored = http.get(f"/v1/responses/{response.id}")
    assert stored.status_code == 200
    assert SECRET_HEADER not in stored.text and "hdr-secret" not in stored.text
    assert stored.json()["tools"][0]["headers"] == {"Authorization": "<redacted>"}
    assert "hdr-secret" not in json.dumps(http.get(f"/v1/responses/{response.id}/input_items").json())
    assert not [t for t in logs.texts() if "hdr-secret" in t]
    assert "hdr-secret" not in json.dumps([r.body for r in fake.chat_requests])


def test_per_request_server_refused_while_disabled(fake_upstream: FakeUpstream, mcp_url: str, tmp_path: Path) -> None:
    with start_relay(tmp_path, _tree(fake_upstream, tmp_path, mcp_url)) as server, sdk(server) as client, pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model=MODEL, input="add", tools=[{"type": "function", "name": "f", "parameters": {}}, request_server(mcp_url)])  # type: ignore[list-item]
    assert refused.value.status_code == 400
    assert refused.value.body["param"] == "tools[1]"  # type: ignore[index]
    assert "allow_request_servers" in refused.value.body["message"]  # type: ignore[index]


def test_loopback_server_refused_unless_its_network_is_allowed(fake: FakeUpstream, mcp_url: str, tmp_path: Path) -> None:
    script(fake, {})
    tree = _tree(fake, tmp_path, mcp_url, allow_request_servers=True)
    with start_relay(tmp_path, tree) as server, sdk(server) as client:
        for url in (mcp_url, mcp_url.replace("127.0.0.1", "localhost"), "http://169.254.169.254/mcp", "http://10.1.2.3/mcp"):
            with pytest.raises(openai.BadRequestError) as refused:
                client.responses.create(model=MODEL, input="hi", tools=[request_server(url)])  # type: ignore[list-item]
            assert refused.value.body["param"] == "tools[0].server_url", url  # type: ignore[index]
    assert fake.chat_requests == []


def test_unreachable_per_request_server_is_a_424_and_nothing_goes_upstream(fake: FakeUpstream, oai: openai.OpenAI, dead_port: int) -> None:
    script(fake, {})
    with pytest.raises(openai.APIStatusError) as failed:
        oai.responses.create(model=MODEL, input="hi", tools=[request_server(f"http://127.0.0.1:{dead_port}/mcp")])  # type: ignore[list-item]
    assert failed.value.status_code == 424
    body = failed.value.body
    assert isinstance(body, dict) and body["type"] == "external_connector_error" and body["code"] == "mcp_list_tools_failed"
    assert body["param"] == "tools[0]" and "could not be reached" in body["message"]
    assert SECRET_HEADER not in failed.value.response.text
    assert fake.chat_requests == []


# ---------------------------------------------------------------------------------- approvals


def _approval(output: list[ResponseOutputItem]) -> McpApprovalRequest:
    requests = [item for item in output if isinstance(item, McpApprovalRequest)]
    assert len(requests) == 1, output
    return requests[0]


def test_approval_approved_by_previous_response_id_runs_the_call(fake: FakeUpstream, oai: openai.OpenAI, mcp_url: str) -> None:
    script(fake, {"add": [{"name": "req__add", "arguments": {"a": 4, "b": 5}}]})
    tools: Any = [request_server(mcp_url)]  # require_approval defaults to "always", as on OpenAI
    first = oai.responses.create(model=MODEL, input="add", tools=tools)
    validate_response(first.model_dump(mode="json", exclude_unset=True))
    request = _approval(first.output)
    assert (request.server_label, request.name, json.loads(request.arguments)) == ("req", "add", {"a": 4, "b": 5})
    assert not any(isinstance(item, McpCall) for item in first.output)
    second = oai.responses.create(
        model=MODEL,
        previous_response_id=first.id,
        input=[{"type": "mcp_approval_response", "approval_request_id": request.id, "approve": True}],
        tools=tools,
    )
    call = next(item for item in second.output if isinstance(item, McpCall))
    assert (call.server_label, call.name, call.output, call.approval_request_id) == ("req", "add", "9", request.id)
    assert second.output_text == "done: 9"


def test_approval_denied_with_full_input_and_store_false(fake: FakeUpstream, oai: openai.OpenAI, mcp_url: str) -> None:
    script(fake, {"add": [{"name": "req__add", "arguments": {"a": 1, "b": 2}}]})
    tools: Any = [request_server(mcp_url, require_approval={"never": {"tool_names": ["echo"]}})]
    first = oai.responses.create(model=MODEL, input="add", tools=tools, store=False)
    request = _approval(first.output)
    history: Any = [{"role": "user", "content": "add"}, *(item.model_dump(mode="json", exclude_none=True) for item in first.output)]
    second = oai.responses.create(
        model=MODEL,
        input=[*history, {"type": "mcp_approval_response", "approval_request_id": request.id, "approve": False, "reason": "not now"}],
        tools=tools,
        store=False,
    )
    assert not any(isinstance(item, McpCall) for item in second.output)
    told = [m["content"] for m in fake.chat_requests[-1].body["messages"] if m["role"] == "tool"]
    assert told and "did not approve" in told[-1] and "not now" in told[-1]
    assert second.output_text.startswith("done: The user did not approve")


def test_approval_stream_validates(fake: FakeUpstream, http: httpx.Client, mcp_url: str) -> None:
    script(fake, {"add": [{"name": "req__add", "arguments": {"a": 1, "b": 1}}]})
    raw = http.post("/v1/responses", json={"model": MODEL, "input": "add", "tools": [request_server(mcp_url)], "stream": True})
    final = check_stream(parse_stream(raw.content))
    assert [item["type"] for item in final["output"]] == ["mcp_list_tools", "mcp_approval_request"]
    assert "hdr-secret" not in raw.text
