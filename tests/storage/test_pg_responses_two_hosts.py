"""Two toolrelay hosts on one PostgreSQL database (``[database] url``), each with its own data directory.

A response stored through host A is retrieved, listed, referenced, continued
(``previous_response_id``) and deleted through host B; an agent run paused on
a client function call through A resumes through B with the built-in step A
took; a background response run by A is polled to its end through B;
neither host writes responses.db or agent.db.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest

from fakes.clients import sdk
from fakes.server import RunningServer, relay_config
from fakes.upstream import FakeUpstream, Reply
from fakes.waiting import wait_until

WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}


def _hosts(relay_factory: Callable[..., RunningServer], fake: FakeUpstream, tmp_path: Path, url: str) -> tuple[RunningServer, RunningServer]:
    def host(name: str) -> RunningServer:
        tree = relay_config(fake.base_url, tmp_path / name, agent={"builtin_tools": ["current_time"]}, database={"url": url})
        return relay_factory(tree=tree)

    return host("a"), host("b")


def test_a_response_stored_through_one_host_is_served_and_continued_by_the_other(
    relay_factory: Callable[..., RunningServer], fake: FakeUpstream, tmp_path: Path, postgres_url: str
) -> None:
    host_a, host_b = _hosts(relay_factory, fake, tmp_path, postgres_url)
    fake.enqueue(Reply(content="Paris."), Reply(content="About two million."), Reply(content="Yes."))
    with sdk(host_a) as a, sdk(host_b) as b:
        first = a.responses.create(model="fake-model", input="Capital of France?")
        fetched = b.responses.retrieve(first.id)
        assert fetched.id == first.id and fetched.output_text == "Paris."
        assert [item.type for item in b.responses.input_items.list(first.id).data] == ["message"]

        second = b.responses.create(model="fake-model", input="How many people live there?", previous_response_id=first.id)
        assert second.output_text == "About two million."
        sent = fake.chat_requests[-1].body["messages"]
        assert sent == [
            {"role": "user", "content": "Capital of France?"},
            {"role": "assistant", "content": "Paris."},
            {"role": "user", "content": "How many people live there?"},
        ]
        # An item of A's response referenced through B.
        b.responses.create(model="fake-model", input=[{"type": "item_reference", "id": first.output[0].id}, {"role": "user", "content": "Sure?"}])  # pyright: ignore[reportArgumentType]
        assert fake.chat_requests[-1].body["messages"][0] == {"role": "assistant", "content": "Paris."}

        b.responses.delete(first.id)
        with pytest.raises(openai.NotFoundError):
            a.responses.retrieve(first.id)
        assert a.responses.retrieve(second.id).output_text == "About two million."
    for host in ("a", "b"):
        assert not (tmp_path / host / "responses.db").exists()


def test_an_agent_run_paused_on_one_host_resumes_on_the_other(
    relay_factory: Callable[..., RunningServer], fake: FakeUpstream, tmp_path: Path, postgres_url: str
) -> None:
    host_a, host_b = _hosts(relay_factory, fake, tmp_path, postgres_url)
    fake.enqueue(
        Reply(tool_calls=[{"name": "current_time", "arguments": {}}]),
        Reply(tool_calls=[{"name": "get_weather", "arguments": {"city": "Oslo"}}]),
        Reply(content="Cold in Oslo."),
    )
    question: Any = {"role": "user", "content": "Weather in Oslo?"}
    with sdk(host_a) as a:
        paused = a.chat.completions.create(model="agent/fake-model", messages=[question], tools=[WEATHER])  # pyright: ignore[reportArgumentType]
    [call] = paused.choices[0].message.tool_calls or []
    assert paused.choices[0].finish_reason == "tool_calls" and call.function.name == "get_weather"  # pyright: ignore[reportAttributeAccessIssue]
    with sdk(host_b) as b:
        resumed = b.chat.completions.create(
            model="agent/fake-model",
            messages=[question, paused.choices[0].message.model_dump(exclude_none=True), {"role": "tool", "tool_call_id": call.id, "content": "-3 C"}],  # pyright: ignore[reportArgumentType]
            tools=[WEATHER],  # pyright: ignore[reportArgumentType]
        )
    assert resumed.choices[0].message.content == "Cold in Oslo."
    sent = [m for m in fake.chat_requests[-1].body["messages"] if m["role"] != "system"]
    names = [(m["role"], (m.get("tool_calls") or [{}])[0].get("function", {}).get("name")) for m in sent]
    assert names == [("user", None), ("assistant", "current_time"), ("tool", None), ("assistant", "get_weather"), ("tool", None)]
    assert '"date"' in sent[2]["content"]  # host A's current_time result, restored on host B
    for host in ("a", "b"):
        assert not (tmp_path / host / "agent.db").exists()


def test_a_background_response_run_by_one_host_is_polled_through_the_other(
    relay_factory: Callable[..., RunningServer], fake: FakeUpstream, tmp_path: Path, postgres_url: str
) -> None:
    host_a, host_b = _hosts(relay_factory, fake, tmp_path, postgres_url)
    fake.enqueue(Reply(content="A long report."))
    with sdk(host_a) as a, sdk(host_b) as b:
        queued = a.responses.create(model="fake-model", input="Write a report.", background=True)
        assert queued.status in ("queued", "in_progress")
        final = wait_until(lambda: (r := b.responses.retrieve(queued.id)).status not in ("queued", "in_progress") and r, timeout=20, what="the run to end")
    assert final.status == "completed" and final.output_text == "A long report."
