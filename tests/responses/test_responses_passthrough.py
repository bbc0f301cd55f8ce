"""/v1/responses passed through to an upstream that speaks the Responses API (``responses_api = "native"``/``"auto"``), over real HTTP with the SDK."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from proxy.helpers import assert_openai_error

from fakes.admin import Admin
from fakes.clients import async_sdk, rest, sdk, stream_raw
from fakes.relays import RelayPool
from fakes.server import RunningServer
from fakes.upstream import FakeUpstream, Reply
from responses.helpers import parse_event_stream, strict_response
from responses.native import native_tree

MODEL = "native/up-model"


@pytest.fixture(scope="module")
def relay(fake_upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with RelayPool(tmp_path_factory.mktemp("native")) as pool:
        yield pool.start(native_tree(fake_upstream, pool.data_dir()))


@pytest.fixture(scope="module")
def admin(relay: RunningServer) -> Iterator[Admin]:
    with Admin(relay) as admin:
        yield admin


@pytest.fixture(scope="module")
def key(admin: Admin) -> tuple[str, str]:
    return admin.create_key("passthrough")


@pytest.fixture
def client(relay: RunningServer, key: tuple[str, str]) -> Iterator[openai.OpenAI]:
    with sdk(relay, key[1]) as client:
        yield client


@pytest.fixture
def http(relay: RunningServer, key: tuple[str, str]) -> Iterator[httpx.Client]:
    with rest(relay, key[1]) as http:
        yield http


def _upstream_bodies(fake: FakeUpstream) -> list[dict[str, Any]]:
    return [r.body for r in fake.requests_to("responses")]


def test_create_is_passed_through_with_the_upstream_model_name(client: openai.OpenAI, fake: FakeUpstream, http: httpx.Client) -> None:
    fake.enqueue(Reply(content="Hello there", completion_id="resp_upstream_own"), Reply(content="again"))
    response = client.responses.create(model=MODEL, input="hi", instructions="Be brief.", metadata={"k": "v"}, max_output_tokens=50)
    assert response.output_text == "Hello there"
    assert response.model == MODEL and response.status == "completed"
    assert response.id.startswith("resp_") and response.id != "resp_upstream_own"
    assert response.usage is not None and response.usage.output_tokens == 2
    (sent,) = _upstream_bodies(fake)
    assert sent["model"] == "up-model" and sent["store"] is False and sent["instructions"] == "Be brief."
    assert sent["input"] == [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}]
    assert fake.chat_requests == []
    # The raw body is a strict Response; the stored copy is what retrieve gives.
    raw = http.post("/v1/responses", json={"model": MODEL, "input": "x"})
    assert raw.status_code == 200, raw.text
    strict_response(raw.json())
    assert client.responses.retrieve(response.id).output_text == "Hello there"


def test_stream_relays_events_renumbered(http: httpx.Client, fake: FakeUpstream, client: openai.OpenAI) -> None:
    fake.enqueue(Reply(content="one two three", reasoning_content="think first", tool_calls=[{"name": "lookup", "arguments": {"q": "x"}}]))
    response, _ = stream_raw(http, {"model": MODEL, "input": "go", "stream": True}, "/v1/responses")
    assert response.status_code == 200
    events = parse_event_stream(response)
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert "response.reasoning_summary_text.delta" in kinds and "response.function_call_arguments.delta" in kinds
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "one two three"  # type: ignore[union-attr]
    final = events[-1].response  # type: ignore[union-attr]
    assert final.model == MODEL and final.id == events[0].response.id  # type: ignore[union-attr]
    assert [item.type for item in final.output] == ["reasoning", "message", "function_call"]
    # Stored before the stream ended.
    assert client.responses.retrieve(final.id).output[2].type == "function_call"  # type: ignore[union-attr]
    assert fake.requests_to("responses")[0].body["stream"] is True


def test_sdk_stream_helper(client: openai.OpenAI, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(content="streamed words here"))
    with client.responses.stream(model=MODEL, input="go") as stream:
        deltas = [event.delta for event in stream if event.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == "streamed words here" == final.output_text
    assert final.model == MODEL


async def test_async_create_and_stream(relay: RunningServer, key: tuple[str, str], fake: FakeUpstream) -> None:
    fake.enqueue(Reply(content="async one"), Reply(content="async two"))
    client = async_sdk(relay, key[1])
    try:
        first = await client.responses.create(model=MODEL, input="a")
        async with client.responses.stream(model=MODEL, input="b", previous_response_id=first.id) as stream:
            final = await stream.get_final_response()
    finally:
        await client.close()
    assert (first.output_text, final.output_text) == ("async one", "async two")
    second = _upstream_bodies(fake)[1]
    assert "previous_response_id" not in second and second["store"] is False
    assert [item.get("role") for item in second["input"]] == ["user", "assistant", "user"]


def test_state_is_kept_here_and_scoped_to_the_key(client: openai.OpenAI, fake: FakeUpstream, admin: Admin, relay: RunningServer) -> None:
    fake.enqueue(Reply(tool_calls=[{"name": "weather", "arguments": {"city": "Paris"}, "id": "call_1"}]), Reply(content="Sunny."))
    tools: Any = [{"type": "function", "name": "weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]
    first = client.responses.create(model=MODEL, input="Weather in Paris?", tools=tools)
    call = first.output[0]
    assert call.type == "function_call" and call.call_id == "call_1"
    second = client.responses.create(
        model=MODEL, previous_response_id=first.id, input=[{"type": "function_call_output", "call_id": "call_1", "output": "sunny"}], tools=tools
    )
    assert second.output_text == "Sunny." and second.previous_response_id == first.id
    sent = _upstream_bodies(fake)[1]["input"]
    assert [item["type"] for item in sent] == ["message", "function_call", "function_call_output"]
    assert all("id" not in item for item in sent)  # our ids name nothing the stateless upstream stored
    items = client.responses.input_items.list(second.id, order="asc")
    assert [item.type for item in items.data] == ["function_call_output"]
    _, other = admin.create_key("other")
    with sdk(relay, other) as stranger:
        with pytest.raises(openai.NotFoundError):
            stranger.responses.retrieve(first.id)
        with pytest.raises(openai.NotFoundError):
            stranger.responses.create(model=MODEL, input="x", previous_response_id=first.id)
    assert client.responses.delete(first.id) is None or True
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)


def test_store_false_keeps_nothing(client: openai.OpenAI, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(content="gone"))
    response = client.responses.create(model=MODEL, input="x", store=False)
    assert response.store is False
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)


def test_hosted_tools_pass_through(client: openai.OpenAI, fake: FakeUpstream) -> None:
    search = {"id": "ws_1", "type": "web_search_call", "status": "completed", "action": {"type": "search", "query": "news"}}
    fake.enqueue(Reply(content="Here is the news.", output_items=[search]))
    response = client.responses.create(model=MODEL, input="news?", tools=[{"type": "web_search"}, {"type": "code_interpreter", "container": {"type": "auto"}}])
    assert [item.type for item in response.output] == ["web_search_call", "message"]
    assert _upstream_bodies(fake)[0]["tools"] == [{"type": "web_search"}, {"type": "code_interpreter", "container": {"type": "auto"}}]


@pytest.mark.parametrize("kind", ["web_search", "web_search_preview", "code_interpreter", "file_search", "image_generation", "mcp", "computer_use_preview"])
def test_hosted_tools_on_a_translated_model_are_a_clear_400(http: httpx.Client, fake: FakeUpstream, kind: str) -> None:
    err = assert_openai_error(
        http.post("/v1/responses", json={"model": "fake-model", "input": "x", "tools": [{"type": "function", "name": "f"}, {"type": kind}]}),
        400,
        param="tools[1].type",
    )
    if kind in ("web_search", "web_search_preview", "code_interpreter"):
        assert "agent/fake-model" in err["message"]
    else:
        assert "natively" in err["message"]
    assert fake.requests == []


def test_hostile_events_end_with_response_failed(http: httpx.Client, fake: FakeUpstream) -> None:
    created = {"type": "response.created", "sequence_number": 7, "response": {"id": "resp_x", "object": "response", "status": "in_progress", "output": []}}
    delta = {"type": "response.output_text.delta", "sequence_number": 3, "item_id": "m", "output_index": 0, "content_index": 0, "delta": "hi", "logprobs": []}
    fake.enqueue(Reply(chunks=[created, delta, b"event: x\ndata: {not json\n\n", delta]))
    response, raw = stream_raw(http, {"model": MODEL, "input": "x", "stream": True}, "/v1/responses")
    assert response.status_code == 200
    frames = [json.loads(line[6:]) for line in raw.decode().splitlines() if line.startswith("data: ")]
    assert [f["type"] for f in frames] == ["response.created", "response.output_text.delta", "response.failed"]
    assert [f["sequence_number"] for f in frames] == [0, 1, 2]
    assert frames[-1]["response"]["error"]["code"] == "server_error" and frames[0]["response"]["id"] != "resp_x"
    # An event name that would forge another event line is refused the same way.
    fake.enqueue(Reply(chunks=[{**created, "type": "response.created\n\nevent: evil"}]))
    assert_openai_error(http.post("/v1/responses", json={"model": MODEL, "input": "x", "stream": True}), 502)


def test_ledger_books_passthrough_usage(client: openai.OpenAI, fake: FakeUpstream, admin: Admin, relay: RunningServer) -> None:
    key_id, value = admin.create_key("ledger")
    fake.enqueue(Reply(content="a b c", usage={"input_tokens": 11, "output_tokens": 3, "total_tokens": 14}), Reply(content="d e", send_usage=False))
    with sdk(relay, value) as own:
        own.responses.create(model=MODEL, input="one")
        with own.responses.stream(model=MODEL, input="two words") as stream:
            stream.get_final_response()
    rows = admin.usage_rows(key_id, count=2)
    booked = sorted((r["mode"], r["prompt_tokens"], r["completion_tokens"], bool(r["estimated"])) for r in rows)
    assert booked[1] == ("responses", 11, 3, False)
    assert booked[0][0] == "responses" and booked[0][2] > 0 and booked[0][3] is True


def test_auto_probes_once_and_falls_back_to_chat(fake_upstream: FakeUpstream, fake: FakeUpstream, tmp_path: Any) -> None:
    auto = {"auto": {"kind": "openai", "base_url": fake.base_url, "models": ["auto-model"], "responses_api": "auto"}}
    with RelayPool(tmp_path) as pool:
        relay = pool.start(native_tree(fake, pool.data_dir(), **auto))
        with Admin(relay) as admin, sdk(relay, admin.create_key()[1]) as client:
            fake.enqueue(Reply(content="native one"), Reply(content="native two"))
            assert client.responses.create(model="auto-model", input="x").output_text == "native one"
            assert client.responses.create(model="auto-model", input="y").output_text == "native two"
            probes = [r.body for r in fake.requests_to("responses")]
            assert probes[0] == {} and len(probes) == 3 and fake.chat_requests == []
        fake.reset()
        fake.missing_endpoints = {"responses"}
        relay = pool.start(native_tree(fake, pool.data_dir(), **auto))
        with Admin(relay) as admin, sdk(relay, admin.create_key()[1]) as client:
            fake.enqueue(Reply(content="via chat"), Reply(content="via chat again"))
            assert client.responses.create(model="auto-model", input="x").output_text == "via chat"
            assert client.responses.create(model="auto-model", input="y").output_text == "via chat again"
        assert len(fake.requests_to("responses")) == 1 and len(fake.chat_requests) == 2
