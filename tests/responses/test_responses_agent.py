"""Agent mode on /v1/responses: built-in steps as server-side items, hosted tools, the function round trip.

A real toolrelay with every built-in on (python in its sandbox, web search
against a local SearXNG-shaped server, memory), the fake upstream scripted
per test to call the tools the way a model would; clients are the official
openai SDK and the OpenAI Agents SDK with their default settings.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

_TESTS = Path(__file__).resolve().parents[1]
for _extra in (_TESTS / "web", _TESTS / "e2e"):
    if str(_extra) not in sys.path:
        sys.path.append(str(_extra))

from e2e_helpers import SearxSite, call, scripted, tool_messages  # noqa: E402
from web_test_servers import LocalServer  # noqa: E402

from fakes.clients import rest, sdk  # noqa: E402
from fakes.relays import e2e_tree, start_relay  # noqa: E402
from fakes.server import RunningServer  # noqa: E402
from fakes.upstream import FakeUpstream, Reply  # noqa: E402

from .helpers import parse_event_stream, strict_response  # noqa: E402
from .schema import check_stream, parse_stream, validate_response  # noqa: E402

MODEL = "agent:fake-model"
PAGE = "/docs/widget"
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather for a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": False},
    "strict": True,
}


@pytest.fixture(scope="module")
def web_server() -> Iterator[LocalServer]:
    with LocalServer() as server:
        yield server


@pytest.fixture
def site(web_server: LocalServer) -> Iterator[SearxSite]:
    searx = SearxSite(web_server)
    url = searx.page(PAGE, "<html><head><title>Widget Handbook</title></head><body><p>The widget code is W-42.</p></body></html>")
    searx.results = [{"url": url, "title": "Widget Handbook", "content": "All about widgets."}]
    yield searx
    searx.reset()


@pytest.fixture(scope="module")
def relay(fake_upstream: FakeUpstream, web_server: LocalServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("responses-agent")
    with start_relay(root, e2e_tree(fake_upstream, root / "data", web_server.url)) as server:
        yield server


@pytest.fixture
def oai(relay: RunningServer) -> Iterator[openai.OpenAI]:
    with sdk(relay) as client:
        yield client


@pytest.fixture
def http(relay: RunningServer) -> Iterator[httpx.Client]:
    with rest(relay, timeout=60.0) as client:
        yield client


def _research(fake: FakeUpstream, url: str) -> None:
    """search -> python -> current_time -> an answer citing the page."""
    fake.responder = scripted(
        lambda _: call("web_search", query="widget code"),
        lambda _: call("python", code="print(6 * 7)"),
        lambda _: call("current_time"),
        lambda _: Reply(content=f"The code is W-42, see {url} for more."),
    )


def test_builtin_steps_are_server_side_items(fake: FakeUpstream, oai: openai.OpenAI, site: SearxSite) -> None:
    url = site.url + PAGE
    _research(fake, url)

    response = oai.responses.create(model=MODEL, input="What is the widget code?")

    body = strict_response(response.model_dump(mode="json", exclude_unset=True))
    assert body.status == "completed"
    assert [item.type for item in response.output] == ["web_search_call", "code_interpreter_call", "mcp_call", "message"]
    search, code, other, message = response.output
    assert search.type == "web_search_call" and search.status == "completed"
    assert search.action.type == "search" and search.action.query == "widget code"
    assert [s.url for s in search.action.sources or []] == [url]
    assert code.type == "code_interpreter_call" and code.status == "completed"
    assert code.code == "print(6 * 7)" and code.container_id
    assert code.outputs and code.outputs[0].type == "logs" and "42" in code.outputs[0].logs
    assert other.type == "mcp_call" and other.server_label == "toolrelay" and other.name == "current_time"
    assert other.status == "completed" and other.output and other.error is None
    assert response.output_text == f"The code is W-42, see {url} for more."
    annotation = message.content[0].annotations[0]
    assert annotation.type == "url_citation" and annotation.url == url and annotation.title == "Widget Handbook"
    assert response.output_text[annotation.start_index : annotation.end_index] == url
    # No reasoning item repeats the steps: the items are the record.
    assert not [item for item in response.output if item.type == "reasoning"]
    assert response.model == MODEL and response.usage is not None and response.usage.input_tokens > 0


def test_streamed_events_in_order(fake: FakeUpstream, http: httpx.Client, site: SearxSite) -> None:
    url = site.url + PAGE
    _research(fake, url)

    with http.stream("POST", "/v1/responses", json={"model": MODEL, "input": "What is the widget code?", "stream": True}) as reply:
        reply.read()
    assert reply.status_code == 200, reply.text
    # Against OpenAI's published schema: every event, the order rules, the final output.
    final_response = check_stream(parse_stream(reply.content))
    validate_response(final_response)
    events = parse_event_stream(reply)  # strict against the SDK's models, sequence numbers 0, 1, 2, ...
    kinds = [event.type for event in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    search = [
        "response.output_item.added",
        "response.web_search_call.in_progress",
        "response.web_search_call.searching",
        "response.web_search_call.completed",
        "response.output_item.done",
    ]
    code = [
        "response.output_item.added",
        "response.code_interpreter_call.in_progress",
        "response.code_interpreter_call_code.delta",
        "response.code_interpreter_call_code.done",
        "response.code_interpreter_call.interpreting",
        "response.code_interpreter_call.completed",
        "response.output_item.done",
    ]
    other = [
        "response.output_item.added",
        "response.mcp_call.in_progress",
        "response.mcp_call_arguments.delta",
        "response.mcp_call_arguments.done",
        "response.mcp_call.completed",
        "response.output_item.done",
    ]
    text = kinds[2 + len(search) + len(code) + len(other) : -1]
    assert kinds[2 : 2 + len(search) + len(code) + len(other)] == search + code + other
    assert text[:2] == ["response.output_item.added", "response.content_part.added"]
    assert "response.output_text.delta" in text
    assert text[-4:] == ["response.output_text.annotation.added", "response.output_text.done", "response.content_part.done", "response.output_item.done"]
    final = events[-1]
    assert final.type == "response.completed"
    assert [item.type for item in final.response.output] == ["web_search_call", "code_interpreter_call", "mcp_call", "message"]
    # Every item's output_index is its place in the final output.
    for event in events:
        if event.type in ("response.output_item.added", "response.output_item.done"):
            assert final.response.output[event.output_index].id == event.item.id


def test_sdk_stream_helper(fake: FakeUpstream, oai: openai.OpenAI, site: SearxSite) -> None:
    url = site.url + PAGE
    _research(fake, url)

    with oai.responses.stream(model=MODEL, input="What is the widget code?") as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert "response.web_search_call.completed" in kinds and "response.code_interpreter_call.completed" in kinds
    assert final.output_text == f"The code is W-42, see {url} for more."
    assert [item.type for item in final.output] == ["web_search_call", "code_interpreter_call", "mcp_call", "message"]


def test_hosted_tools_choose_the_builtins(fake: FakeUpstream, oai: openai.OpenAI) -> None:
    fake.responder = scripted(lambda _: Reply(content="ok"))

    oai.responses.create(model=MODEL, input="hi", tools=[{"type": "code_interpreter", "container": {"type": "auto"}}])
    oai.responses.create(model=MODEL, input="hi", tools=[{"type": "web_search"}])
    oai.responses.create(model=MODEL, input="hi")

    offered = [{t["function"]["name"] for t in rec.body.get("tools") or []} for rec in fake.chat_requests]
    code_only, web_only, default = offered
    assert "python" in code_only and not code_only & {"web_search", "fetch_page"}
    assert {"web_search", "fetch_page"} <= web_only and "python" not in web_only
    assert {"python", "web_search", "fetch_page"} <= default
    # Built-ins no hosted type stands for stay on.
    assert "current_time" in code_only and "current_time" in web_only


def _weather_run(fake: FakeUpstream) -> None:
    """search, then the client's get_weather, then (with both results) the answer."""

    def after(results: list[dict[str, Any]]) -> Reply:
        return Reply(content=f"Sunny, says {results[-1]['content']}.")

    fake.responder = scripted(
        lambda _: call("web_search", query="paris weather"),
        lambda _: Reply(tool_calls=[{"name": "get_weather", "arguments": {"city": "Paris"}}]),
        after,
    )


def _assert_resumed(fake: FakeUpstream) -> None:
    last = fake.chat_requests[-1].body
    results = tool_messages(last)
    # The built-in step was put back from the continuation store, before the client's result.
    assert len(results) == 2 and "W-42" not in results[1]["content"] and results[1]["content"] == "22 C"
    names = [c["function"]["name"] for m in last["messages"] if m.get("role") == "assistant" for c in m.get("tool_calls") or []]
    assert names == ["web_search", "get_weather"]


def test_function_round_trip_by_previous_response_id(fake: FakeUpstream, oai: openai.OpenAI, site: SearxSite) -> None:
    _weather_run(fake)

    first = oai.responses.create(model=MODEL, input="Weather in Paris?", tools=[WEATHER])

    assert [item.type for item in first.output] == ["web_search_call", "function_call"]
    function_call = first.output[1]
    assert function_call.type == "function_call" and function_call.name == "get_weather" and function_call.status == "completed"
    assert json.loads(function_call.arguments) == {"city": "Paris"}
    second = oai.responses.create(
        model=MODEL,
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": function_call.call_id, "output": "22 C"}],
        tools=[WEATHER],
    )
    assert second.output_text == "Sunny, says 22 C."
    _assert_resumed(fake)


def test_function_round_trip_with_full_input_and_store_false(fake: FakeUpstream, oai: openai.OpenAI, site: SearxSite) -> None:
    _weather_run(fake)
    user = {"role": "user", "content": "Weather in Paris?"}

    first = oai.responses.create(model=MODEL, input=[user], tools=[WEATHER], store=False)

    function_call = first.output[-1]
    assert function_call.type == "function_call"
    # The whole conversation sent back, our server-side items included, as the Agents SDK does with store=False.
    replay = [user, *(item.model_dump(mode="json", exclude_none=True) for item in first.output)]
    replay.append({"type": "function_call_output", "call_id": function_call.call_id, "output": "22 C"})
    second = oai.responses.create(model=MODEL, input=replay, tools=[WEATHER], store=False)
    assert second.output_text == "Sunny, says 22 C."
    _assert_resumed(fake)
    with pytest.raises(openai.NotFoundError):
        oai.responses.retrieve(second.id)


def test_server_side_items_are_accepted_back(fake: FakeUpstream, http: httpx.Client) -> None:
    fake.responder = scripted(lambda _: Reply(content="ok"))
    items = [
        {"role": "user", "content": "hi"},
        {"type": "web_search_call", "id": "ws_1", "status": "completed", "action": {"type": "search", "query": "q"}},
        {"type": "code_interpreter_call", "id": "ci_1", "status": "completed", "code": "1", "container_id": "x", "outputs": None},
        {"type": "mcp_call", "id": "mcp_1", "server_label": "toolrelay", "name": "current_time", "arguments": "{}", "output": "noon"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "again"},
    ]

    reply = http.post("/v1/responses", json={"model": MODEL, "input": items})

    assert reply.status_code == 200, reply.text
    sent = fake.chat_requests[-1].body["messages"]
    assert [m["role"] for m in sent if m["role"] != "system"] == ["user", "assistant", "user"]
    listed = http.get(f"/v1/responses/{reply.json()['id']}/input_items", params={"order": "asc"}).json()["data"]
    assert [item["type"] for item in listed] == ["message", "web_search_call", "code_interpreter_call", "mcp_call", "message", "message"]


def test_hosted_tool_errors_name_the_entry(http: httpx.Client) -> None:
    reply = http.post("/v1/responses", json={"model": MODEL, "input": "hi", "tools": [{"type": "web_search"}, {"type": "function", "name": ""}]})

    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["param"] == "tools[1].name"


def test_agents_sdk_default_settings(fake: FakeUpstream, relay: RunningServer, site: SearxSite) -> None:
    agents = pytest.importorskip("agents")
    seen: list[str] = []

    @agents.function_tool
    def get_weather(city: str) -> str:
        """Current weather for a city."""
        seen.append(city)
        return "22 C"

    _weather_run(fake)

    async def run() -> Any:
        client = openai.AsyncOpenAI(base_url=relay.base_url, api_key="sk-test", max_retries=0)
        try:
            model = agents.OpenAIResponsesModel(model=MODEL, openai_client=client)
            agent = agents.Agent(name="helper", instructions="Be brief.", model=model, tools=[get_weather, agents.WebSearchTool()])
            return await agents.Runner.run(agent, "Weather in Paris?", run_config=agents.RunConfig(tracing_disabled=True))
        finally:
            await client.close()

    result = asyncio.run(run())

    assert seen == ["Paris"]
    assert result.final_output == "Sunny, says 22 C."
    kinds = [item.type for item in result.new_items]
    assert kinds == ["tool_call_item", "tool_call_item", "tool_call_output_item", "message_output_item"], kinds
    # Hosted WebSearchTool turned on web search only, python stayed off.
    offered = {t["function"]["name"] for t in fake.chat_requests[0].body.get("tools") or []}
    assert "web_search" in offered and "python" not in offered


def test_agents_sdk_with_builtin_mcp_items(fake: FakeUpstream, relay: RunningServer) -> None:
    agents = pytest.importorskip("agents")
    fake.responder = scripted(lambda _: call("current_time"), lambda _: Reply(content="It is now."))

    async def run() -> Any:
        client = openai.AsyncOpenAI(base_url=relay.base_url, api_key="sk-test", max_retries=0)
        try:
            model = agents.OpenAIResponsesModel(model=MODEL, openai_client=client)
            agent = agents.Agent(name="helper", model=model)
            streamed = agents.Runner.run_streamed(agent, "Time?", run_config=agents.RunConfig(tracing_disabled=True))
            async for _ in streamed.stream_events():
                pass
            return streamed
        finally:
            await client.close()

    result = asyncio.run(run())

    assert result.final_output == "It is now."
    assert [item.type for item in result.new_items] == ["tool_call_item", "message_output_item"]


def test_background_agent_run(fake: FakeUpstream, oai: openai.OpenAI, site: SearxSite) -> None:
    """``background: true`` runs the agent in a task: queued at once, then the same items as a foreground run."""
    url = site.url + PAGE
    _research(fake, url)

    queued = oai.responses.create(model=MODEL, input="What is the widget code?", background=True)
    assert queued.status in ("queued", "in_progress") and queued.output == []

    done = queued
    for _ in range(300):
        done = oai.responses.retrieve(queued.id)
        if done.status not in ("queued", "in_progress"):
            break
        time.sleep(0.1)
    assert done.status == "completed", done.status
    assert [item.type for item in done.output] == ["web_search_call", "code_interpreter_call", "mcp_call", "message"]
    assert done.output_text == f"The code is W-42, see {url} for more."
    assert done.usage is not None and done.usage.input_tokens > 0
