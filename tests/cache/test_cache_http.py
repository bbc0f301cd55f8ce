"""The response cache over real HTTP with the OpenAI SDK, in front of the fake upstream.

Each test counts what reached the upstream: a hit must not, a miss must.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import openai
import pytest
import redis

from fakes.admin import ADMIN_KEY, Admin
from fakes.clients import rest, sdk
from fakes.server import RunningServer
from fakes.upstream import FakeUpstream, Reply

from .conftest import MEMORY_CACHE, question

HEADER = "x-toolrelay-cache"


def _ask(client: openai.OpenAI, messages: list[dict[str, str]], **params: Any) -> tuple[str | None, Any]:
    """One non-streamed request: (the cache header, the parsed completion)."""
    raw = client.chat.completions.with_raw_response.create(model="fake-model", messages=messages, **params)  # pyright: ignore[reportArgumentType, reportCallIssue]
    return raw.headers.get(HEADER), raw.parse()


def _ask_streamed(client: openai.OpenAI, messages: list[dict[str, str]], **params: Any) -> tuple[str | None, list[Any]]:
    """One streamed request: (the cache header, its chunks)."""
    raw = client.chat.completions.with_raw_response.create(model="fake-model", messages=messages, stream=True, **params)  # pyright: ignore[reportArgumentType, reportCallIssue]
    return raw.headers.get(HEADER), list(raw.parse())


def _text(chunks: list[Any]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def test_a_repeated_request_is_answered_once_by_the_upstream(cache_relay: RunningServer, admin: Admin, fake: FakeUpstream) -> None:
    _, key = admin.create_key("hit")
    messages = question()
    with sdk(cache_relay, key) as client:
        first_header, first = _ask(client, messages, temperature=0)
        second_header, second = _ask(client, messages, temperature=0)
    assert (first_header, second_header) == ("miss", "hit")
    assert len(fake.chat_requests) == 1
    assert second.choices[0].message.content == first.choices[0].message.content
    assert second.choices[0].finish_reason == first.choices[0].finish_reason == "stop"
    assert second.usage == first.usage
    assert second.system_fingerprint == first.system_fingerprint == "fp_fake"
    # A fresh answer object, not the stored one: its own id, the client's model name.
    assert second.id != first.id
    assert second.model == "fake-model"


def test_the_access_line_marks_a_hit(cache_relay: RunningServer, admin: Admin, fake: FakeUpstream, caplog: pytest.LogCaptureFixture) -> None:
    key_id, key = admin.create_key("logged")
    messages = question()

    def mine() -> list[logging.LogRecord]:
        # The relay runs in this process, beside pytest's handlers: each line is a record with its fields.
        return [r for r in caplog.records if r.name == "toolrelay.access" and getattr(r, "access", {}).get("key") == key_id]

    with caplog.at_level(logging.INFO, logger="toolrelay.access"), sdk(cache_relay, key) as client:
        statuses = [_ask(client, messages, temperature=0)[0] for _ in range(2)]
        deadline = time.monotonic() + 5
        while len(mine()) < 2 and time.monotonic() < deadline:  # a line is written just after its response
            time.sleep(0.02)
    assert statuses == ["miss", "hit"]
    lines = mine()
    assert [r.access["cache_hit"] for r in lines] == [False, True]  # type: ignore[attr-defined]
    assert "cache=hit" not in lines[0].getMessage() and "cache=hit" in lines[1].getMessage()


def test_a_translated_responses_request_is_cached_too(cache_relay: RunningServer, admin: Admin, fake: FakeUpstream) -> None:
    _, key = admin.create_key("responses")
    text = question()[0]["content"]
    with sdk(cache_relay, key) as client:
        first = client.responses.with_raw_response.create(model="fake-model", input=text, temperature=0)
        second = client.responses.with_raw_response.create(model="fake-model", input=text, temperature=0)
        with client.responses.stream(model="fake-model", input=text, temperature=0) as stream:
            streamed = stream.get_final_response()
        answer = second.parse()
        kept = client.responses.retrieve(answer.id)  # a replayed answer is stored like any other
    assert (first.headers.get(HEADER), second.headers.get(HEADER)) == ("miss", "hit")
    assert len(fake.chat_requests) == 1
    assert answer.output_text == first.parse().output_text == streamed.output_text == kept.output_text
    assert answer.id != first.parse().id and answer.status == "completed"


def test_a_streamed_request_replays_a_stored_answer_as_a_valid_stream(cache_relay: RunningServer, admin: Admin, fake: FakeUpstream) -> None:
    _, key = admin.create_key("stream")
    messages = question()
    with sdk(cache_relay, key) as client:
        _, plain = _ask(client, messages, temperature=0)
        header, chunks = _ask_streamed(client, messages, temperature=0, stream_options={"include_usage": True})
        # The SDK's own accumulator checks the stream's shape (one id, role first, finish reasons).
        with client.chat.completions.stream(model="fake-model", messages=messages, temperature=0) as stream:  # pyright: ignore[reportArgumentType]
            final = stream.get_final_completion()
    assert header == "hit"
    assert len(fake.chat_requests) == 1
    assert _text(chunks) == plain.choices[0].message.content
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage == plain.usage
    assert final.choices[0].message.content == plain.choices[0].message.content


def test_a_streamed_answer_is_stored_and_serves_a_plain_request(cache_relay: RunningServer, admin: Admin, fake: FakeUpstream) -> None:
    _, key = admin.create_key("stored-stream")
    messages = question()
    fake.enqueue(Reply(content="one two three four five six", chunk_tokens=1))
    with sdk(cache_relay, key) as client:
        header, chunks = _ask_streamed(client, messages, seed=7)
        again, plain = _ask(client, messages, seed=7)
    assert (header, again) == ("miss", "hit")
    assert len(fake.chat_requests) == 1
    assert plain.choices[0].message.content == _text(chunks) == "one two three four five six"


def test_another_key_never_hits_your_entry(cache_relay: RunningServer, admin: Admin, fake: FakeUpstream) -> None:
    _, mine = admin.create_key("mine")
    _, theirs = admin.create_key("theirs")
    messages = question()
    with sdk(cache_relay, mine) as client:
        _ask(client, messages, temperature=0)
    with sdk(cache_relay, theirs) as client:
        header, _ = _ask(client, messages, temperature=0)
    assert header == "miss"
    assert len(fake.chat_requests) == 2


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"temperature": 0.7}, ("bypass", "bypass", 2)),
        ({}, ("bypass", "bypass", 2)),  # the default temperature is 1
        ({"temperature": 0.7, "seed": 42}, ("miss", "hit", 1)),
        ({"temperature": 0.0}, ("miss", "hit", 1)),
    ],
)
def test_only_repeatable_requests_are_cached(
    cache_relay: RunningServer, admin: Admin, fake: FakeUpstream, params: dict[str, Any], expected: tuple[str, str, int]
) -> None:
    _, key = admin.create_key("sampling")
    messages = question()
    with sdk(cache_relay, key) as client:
        first, _ = _ask(client, messages, **params)
        second, _ = _ask(client, messages, **params)
    assert (first, second, len(fake.chat_requests)) == expected


def test_any_parameter_that_changes_the_answer_is_part_of_the_key(cache_relay: RunningServer, admin: Admin, fake: FakeUpstream) -> None:
    _, key = admin.create_key("params")
    messages = question()
    with sdk(cache_relay, key) as client:
        _ask(client, messages, temperature=0)
        assert _ask(client, messages, temperature=0, max_tokens=5)[0] == "miss"
        assert _ask(client, messages, temperature=0, user="someone-else")[0] == "hit"  # who it is for does not change it
        assert _ask(client, messages, temperature=0, extra_headers={"cache-control": "no-store"})[0] == "bypass"
    assert len(fake.chat_requests) == 3


def test_no_cache_asks_the_upstream_and_refreshes_the_entry(cache_relay: RunningServer, admin: Admin, fake: FakeUpstream) -> None:
    _, key = admin.create_key("refresh")
    messages = question()
    fake.enqueue(Reply(content="old answer"), Reply(content="new answer"))
    with sdk(cache_relay, key) as client:
        _ask(client, messages, temperature=0)
        header, fresh = _ask(client, messages, temperature=0, extra_headers={"cache-control": "no-cache"})
        again, cached = _ask(client, messages, temperature=0)
    assert header == "miss" and fresh.choices[0].message.content == "new answer"
    assert again == "hit" and cached.choices[0].message.content == "new answer"
    assert len(fake.chat_requests) == 2


def test_errors_and_cut_streams_are_not_cached(cache_relay: RunningServer, admin: Admin, fake: FakeUpstream) -> None:
    _, key = admin.create_key("errors")
    failed, cut = question(), question()
    fake.enqueue(Reply(status=500), Reply(content="a long answer that is cut short here", chunk_tokens=1, break_after=3))
    with sdk(cache_relay, key) as client:
        with pytest.raises(openai.InternalServerError):
            _ask(client, failed, temperature=0)
        with pytest.raises(openai.APIError):
            _ask_streamed(client, cut, temperature=0)
        assert _ask(client, failed, temperature=0)[0] == "miss"
        assert _ask_streamed(client, cut, temperature=0)[0] == "miss"
    assert len(fake.chat_requests) == 4


def test_tool_call_answers_are_not_cached_by_default(cache_relay: RunningServer, admin: Admin, fake: FakeUpstream) -> None:
    _, key = admin.create_key("tools")
    messages = question()
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}]
    call = Reply(tool_calls=[{"name": "lookup", "arguments": {"q": "x"}}])
    fake.enqueue(call, call)
    with sdk(cache_relay, key) as client:
        first, answer = _ask(client, messages, temperature=0, tools=tools)
        second, _ = _ask(client, messages, temperature=0, tools=tools)
    assert answer.choices[0].message.tool_calls
    assert (first, second) == ("miss", "miss")
    assert len(fake.chat_requests) == 2


def test_a_hit_is_booked_at_no_cost_and_still_counts_against_the_rate_limit(cache_relay: RunningServer, admin: Admin, fake: FakeUpstream) -> None:
    key_id, key = admin.create_key("books", rpm=2)
    messages = question()
    with sdk(cache_relay, key) as client:
        _ask(client, messages, temperature=0)
        assert _ask(client, messages, temperature=0)[0] == "hit"
        with pytest.raises(openai.RateLimitError):
            _ask(client, messages, temperature=0)
    rows = admin.usage_rows(key_id, count=3)
    assert [(r["status"], r["cache_hit"]) for r in rows] == [(200, False), (200, True), (429, False)]
    miss, hit = rows[0], rows[1]
    assert miss["cost_usd"] > 0 and hit["cost_usd"] == 0
    # The replayed answer's tokens are on the row, so the savings can be read from the ledger.
    assert (hit["prompt_tokens"], hit["completion_tokens"]) == (miss["prompt_tokens"], miss["completion_tokens"])
    assert len(fake.chat_requests) == 1


def test_agent_mode_is_never_cached(cache_relay: RunningServer, admin: Admin, fake: FakeUpstream) -> None:
    _, key = admin.create_key("agent")
    messages = question()
    with sdk(cache_relay, key) as client:
        for _ in range(2):
            raw = client.chat.completions.with_raw_response.create(model="agent/fake-model", messages=messages, temperature=0)  # pyright: ignore[reportArgumentType]
            assert raw.headers.get(HEADER) is None
    assert len(fake.chat_requests) == 2


def test_metrics_count_hits_misses_and_stores(cache_relay: RunningServer, admin: Admin, fake: FakeUpstream) -> None:
    def counts() -> dict[str, float]:
        text = admin.http.get("/metrics").text
        return {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines() if line.startswith("toolrelay_cache_")}

    _, key = admin.create_key("metrics")
    before = counts()
    messages = question()
    with sdk(cache_relay, key) as client:
        _ask(client, messages, temperature=0)
        _ask(client, messages, temperature=0)
        _ask(client, messages, temperature=1)
    after = counts()

    def grew(name: str) -> float:
        return after.get(name, 0) - before.get(name, 0)

    assert grew('toolrelay_cache_lookups_total{result="hit"}') == 1
    assert grew('toolrelay_cache_lookups_total{result="miss"}') == 1
    assert grew('toolrelay_cache_lookups_total{result="bypass"}') == 1
    assert grew('toolrelay_cache_stored_total{backend="memory"}') == 1


def test_entries_expire_after_the_ttl_and_tool_calls_are_cached_when_allowed(make_relay: Callable[..., RunningServer], fake: FakeUpstream) -> None:
    relay = make_relay(cache={**MEMORY_CACHE, "ttl_seconds": 0.5, "cache_tool_calls": True})
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}]
    with sdk(relay, ADMIN_KEY) as client:
        messages = question()
        fake.enqueue(Reply(tool_calls=[{"name": "lookup", "arguments": {"q": "x"}}]))
        assert _ask(client, messages, temperature=0, tools=tools)[0] == "miss"
        header, answer = _ask(client, messages, temperature=0, tools=tools)
        assert header == "hit" and answer.choices[0].message.tool_calls
        time.sleep(0.7)
        assert _ask(client, messages, temperature=0, tools=tools)[0] == "miss"
    assert len(fake.chat_requests) == 2


def test_the_cache_is_off_by_default(relay: RunningServer, fake: FakeUpstream) -> None:
    messages = question()
    with sdk(relay) as client:
        assert _ask(client, messages, temperature=0)[0] is None
        assert _ask(client, messages, temperature=0)[0] is None
    assert len(fake.chat_requests) == 2


def test_redis_shares_entries_between_relays(relay_factory: Callable[..., RunningServer], redis_url: str, fake: FakeUpstream) -> None:
    cache = {"enabled": True, "backend": "redis", "ttl_seconds": 60}
    first = relay_factory(cache=cache, redis={"url": redis_url, "prefix": "cachetest"})
    second = relay_factory(cache=cache, redis={"url": redis_url, "prefix": "cachetest"})
    messages = question()
    with sdk(first) as client:
        assert _ask(client, messages, temperature=0)[0] == "miss"
    # The write is sent in a task of its own: wait until it landed.
    store = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + 5
    while not store.keys("cachetest:cache:*") and time.monotonic() < deadline:
        time.sleep(0.02)
    store.close()
    with rest(second) as http:
        body = {"model": "fake-model", "messages": messages, "temperature": 0, "stream": True}
        response = http.post("/v1/chat/completions", json=body)
    assert response.headers[HEADER] == "hit"
    assert b"data: [DONE]" in response.content
    assert len(fake.chat_requests) == 1


def test_an_unreachable_redis_is_a_miss_not_an_error(relay_factory: Callable[..., RunningServer], dead_port: int, fake: FakeUpstream) -> None:
    relay = relay_factory(
        cache={"enabled": True, "backend": "redis"}, redis={"url": f"redis://127.0.0.1:{dead_port}/0", "socket_timeout": 0.2, "connect_timeout": 0.2}
    )
    messages = question()
    with sdk(relay) as client:
        first, answer = _ask(client, messages, temperature=0)
        second, _ = _ask(client, messages, temperature=0)
    assert (first, second) == ("miss", "miss")
    assert answer.choices[0].message.content
    assert len(fake.chat_requests) == 2
