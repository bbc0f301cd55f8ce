"""MCP servers' tools in chat agent mode, over real transports, driven by the official openai SDK.

The relay (conftest ``mcp_relay``) supervises the stdio test server ``files``
and connects to the streamable-HTTP test server ``remote``; the scripted fake
upstream plays the model and calls their tools as ``files__<tool>`` and
``remote__<tool>``.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from typing import Any

import openai
import pytest
from mcp_support import SECRET, TOOL_TIMEOUT

from fakes.clients import rest, sdk
from fakes.server import RunningServer
from fakes.upstream import FakeUpstream, Reply
from fakes.waiting import wait_until

MODEL = "agent/fake-tools"
WEATHER_TOOL = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
}


def script(fake: FakeUpstream, calls: dict[str, list[dict[str, Any]]]) -> None:
    """The model: the user's text picks the calls of the first turn; once results came back it answers with them."""

    def respond(body: dict[str, Any]) -> Reply:
        messages = body["messages"]
        # Results came back when the last turn is tool messages (and the images they returned, as a user message).
        last = messages[-2] if messages[-1]["role"] == "user" and isinstance(messages[-1]["content"], list) else messages[-1]
        if last["role"] == "tool":
            return Reply(content="done: " + " | ".join(m["content"] for m in messages if m["role"] == "tool"))
        user = next(m["content"] for m in reversed(messages) if m["role"] == "user")
        return Reply(tool_calls=calls[user]) if user in calls else Reply(content="no tools needed")

    fake.responder = respond


def ask(client: openai.OpenAI, text: str, **kwargs: Any) -> Any:
    return client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": text}], **kwargs)


def steps(message: Any) -> list[dict[str, Any]]:
    return (message.model_extra or {})["agent_steps"]


def results(all_steps: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {s["tool"]: s for s in all_steps if s["type"] == "tool_result"}


def ready(relay: RunningServer) -> dict[str, Any]:
    # No key: a client key counts as a wrong admin credential on /ready.
    with rest(relay, key=None) as http:
        return http.get("/ready").json()


def mcp_state(relay: RunningServer) -> dict[str, str]:
    return {s["name"]: s["status"] for s in ready(relay)["mcp"]}


@pytest.fixture
def client(mcp_relay: RunningServer) -> Any:
    with sdk(mcp_relay, timeout=60.0) as c:
        yield c


def test_tools_of_both_servers_are_offered_under_collision_free_names_with_their_schemas(fake: FakeUpstream, client: openai.OpenAI) -> None:
    script(fake, {})
    ask(client, "hello")
    offered = {t["function"]["name"]: t["function"] for t in fake.chat_requests[0].body["tools"]}
    for server in ("files", "remote"):
        for tool in ("add", "echo", "slow", "fail", "pixel", "crash", "grow"):
            assert f"{server}__{tool}" in offered
    assert offered["files__add"]["parameters"]["properties"].keys() == {"a", "b"}
    assert offered["files__add"]["parameters"]["required"] == ["a", "b"]
    assert "current_time" in offered


def test_stdio_and_http_tools_run_concurrently_and_their_results_reach_the_model(fake: FakeUpstream, client: openai.OpenAI) -> None:
    script(
        fake,
        {
            "both": [
                {"id": "c1", "name": "files__add", "arguments": {"a": 2, "b": 40}},
                {"id": "c2", "name": "remote__echo", "arguments": {"text": "hi"}},
                {"id": "c3", "name": "files__echo", "arguments": {"text": "yo"}},
            ]
        },
    )
    reply = ask(client, "both")
    message = reply.choices[0].message
    # The child got TEST_SECRET from our MCP_TEST_SECRET; the HTTP server has none.
    assert message.content == f"done: 42 | remote:hi:- | files:yo:{SECRET}"
    got = results(steps(message))
    assert {name: r["status"] for name, r in got.items()} == {"files__add": "ok", "remote__echo": "ok", "files__echo": "ok"}
    assert got["files__add"]["data"]["server"] == "files"
    assert reply.choices[0].finish_reason == "stop"
    assert message.tool_calls is None


def test_streamed_steps_carry_mcp_calls_like_built_ins(fake: FakeUpstream, client: openai.OpenAI) -> None:
    script(fake, {"stream": [{"id": "c1", "name": "remote__add", "arguments": {"a": 1, "b": 1}}]})
    stream = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "stream"}], stream=True)
    reasoning = ""
    live: list[dict[str, Any]] = []
    content = ""
    for chunk in stream:
        for choice in chunk.choices:
            delta = choice.delta.model_extra or {}
            reasoning += delta.get("reasoning_content") or ""
            live.extend(delta.get("agent_steps_delta") or [])
            content += choice.delta.content or ""
    assert "Calling remote__add(" in reasoning and "remote__add returned: 2" in reasoning
    assert [s["type"] for s in live] == ["tool_call", "tool_result"]
    assert live[1]["status"] == "ok" and live[1]["summary"] == "2"
    assert content == "done: 2"


def test_failing_tool_and_image_tool_results(fake: FakeUpstream, client: openai.OpenAI) -> None:
    script(fake, {"odd": [{"id": "c1", "name": "files__fail", "arguments": {}}, {"id": "c2", "name": "remote__pixel", "arguments": {}}]})
    message = ask(client, "odd").choices[0].message
    got = results(steps(message))
    assert got["files__fail"]["status"] == "error"
    assert got["files__fail"]["summary"].startswith("error:")
    assert got["remote__pixel"]["status"] == "ok"
    assert got["remote__pixel"]["data"]["content"] == [{"type": "image", "mime_type": "image/png", "bytes": 70, "shown_to_model": True}]
    messages = fake.chat_requests[-1].body["messages"]
    tool_texts = [m["content"] for m in messages if m["role"] == "tool"]
    assert tool_texts[0].startswith("error:")
    assert tool_texts[1] == "[image: image/png, 70 bytes; attached below for you to view]"
    # The image itself reaches the model: a user message of image parts right after the step's tool messages.
    shown = messages[-1]
    assert shown["role"] == "user" and messages[-2]["role"] == "tool"
    assert shown["content"][0] == {"type": "text", "text": "Images returned by remote__pixel (call c2):"}
    url = shown["content"][1]["image_url"]["url"]
    assert url.startswith("data:image/png;base64,") and base64.b64decode(url.split(",", 1)[1]).startswith(b"\x89PNG")


def test_mcp_call_runs_on_the_server_and_the_client_function_comes_back(fake: FakeUpstream, client: openai.OpenAI) -> None:
    script(
        fake,
        {"mixed": [{"id": "c1", "name": "files__add", "arguments": {"a": 3, "b": 4}}, {"id": "c2", "name": "get_weather", "arguments": {"city": "Paris"}}]},
    )
    reply = ask(client, "mixed", tools=[WEATHER_TOOL])
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls or []
    assert [c.function.name for c in calls] == ["get_weather"]
    assert json.loads(calls[0].function.arguments) == {"city": "Paris"}
    assert results(steps(choice.message))["files__add"]["summary"] == "7"

    # Streamed: the same split, the client's call as tool_call deltas.
    fake.reset()
    script(
        fake,
        {"mixed": [{"id": "c1", "name": "files__add", "arguments": {"a": 3, "b": 4}}, {"id": "c2", "name": "get_weather", "arguments": {"city": "Paris"}}]},
    )
    with client.chat.completions.stream(model=MODEL, messages=[{"role": "user", "content": "mixed"}], tools=[WEATHER_TOOL]) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].finish_reason == "tool_calls"
    assert [c.function.name for c in final.choices[0].message.tool_calls or []] == ["get_weather"]
    assert results(steps(final.choices[0].message))["files__add"]["status"] == "ok"


def test_a_hung_tool_times_out_without_blocking_other_requests(fake: FakeUpstream, mcp_relay: RunningServer) -> None:
    script(
        fake,
        {
            "hang": [{"id": "c1", "name": "files__slow", "arguments": {"seconds": 30}}],
            "quick": [{"id": "c2", "name": "files__add", "arguments": {"a": 1, "b": 2}}],
        },
    )
    outcome: dict[str, Any] = {}

    def hang() -> None:
        with sdk(mcp_relay, timeout=60.0) as c:
            started = time.monotonic()
            outcome["message"] = ask(c, "hang").choices[0].message
            outcome["seconds"] = time.monotonic() - started

    worker = threading.Thread(target=hang)
    worker.start()
    wait_until(lambda: any(r.body["messages"][-1].get("content") == "hang" for r in fake.chat_requests), what="the hung call to start")
    with sdk(mcp_relay, timeout=60.0) as c:
        started = time.monotonic()
        quick = ask(c, "quick").choices[0].message
        assert quick.content == "done: 3"
        # The same stdio child answers while its other call hangs.
        assert time.monotonic() - started < TOOL_TIMEOUT
    worker.join(30)
    assert results(steps(outcome["message"]))["files__slow"]["status"] == "timeout"
    assert TOOL_TIMEOUT <= outcome["seconds"] < TOOL_TIMEOUT + 5


def test_a_crashed_stdio_server_is_restarted_and_its_tools_work_again(fake: FakeUpstream, client: openai.OpenAI, mcp_relay: RunningServer) -> None:
    script(
        fake, {"crash": [{"id": "c1", "name": "files__crash", "arguments": {}}], "again": [{"id": "c2", "name": "files__add", "arguments": {"a": 5, "b": 5}}]}
    )
    before = next(s for s in _details(mcp_relay) if s["name"] == "files")["restarts"]
    message = ask(client, "crash").choices[0].message
    assert results(steps(message))["files__crash"]["status"] == "error"
    # Down for a moment (restart back-off 0.2 s): not always observable, so wait for the restart itself.
    wait_until(lambda: next(s for s in _details(mcp_relay) if s["name"] == "files")["restarts"] > before, timeout=20, what="the restart")
    wait_until(lambda: mcp_state(mcp_relay)["files"] == "ready", timeout=20, what="files ready again")
    assert ask(client, "again").choices[0].message.content == "done: 10"


def test_tools_are_relisted_on_list_changed(fake: FakeUpstream, client: openai.OpenAI) -> None:
    script(fake, {"grow": [{"id": "c1", "name": "remote__grow", "arguments": {}}], "extra": [{"id": "c2", "name": "remote__extra", "arguments": {}}]})
    assert results(steps(ask(client, "grow").choices[0].message))["remote__grow"]["status"] == "ok"

    def offered_extra() -> bool:
        fake.reset()
        script(fake, {"extra": [{"id": "c2", "name": "remote__extra", "arguments": {}}]})
        return ask(client, "extra").choices[0].message.content == "done: extra here"

    wait_until(offered_extra, timeout=10, interval=0.2, what="remote__extra to be offered")


def _details(relay: RunningServer) -> list[dict[str, Any]]:
    """Each server's full /ready entry (restarts, detail): the admin view, read from the live services."""
    return relay.services.ready_extras()["mcp"]["servers"]
