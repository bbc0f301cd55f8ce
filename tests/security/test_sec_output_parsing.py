"""Issue 10 item 18: parsing the model's output must be linear in its length.

The textual tool-call detection used backtracking regexes and re-copied the
whole turn on every streamed chunk. Model output is attacker-influenced
(prompt injection, a hostile upstream), and the final parse ran on the event
loop, so one answer could stall every other request. Measured before the fix
on this VM: a 200 KB answer of table rows padded with spaces after a
``<tool_call>`` marker took 10 s (quadratic: 2 MB would take many minutes);
``<tool_call>{`` followed by 200,000 spaces stalled ``/health`` for minutes.
After: the 2 MB answer goes through in about 2 s.

Over HTTP against a real relay; the bounds are wide (the VM is shared), far
above the fixed code's time and far below the old code's.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fakes.server import RunningServer, relay_config
from fakes.sse import data_events
from fakes.upstream import FakeUpstream, Reply

GENEROUS_SECONDS = 60.0
# Table rows padded with a long run of spaces: what made the old regex quadratic.
ROW = "| cell | value |" + " " * 8000 + "\n"


@pytest.fixture
def server(relay_factory: Callable[..., RunningServer], fake: FakeUpstream, tmp_path: Path) -> Iterator[RunningServer]:
    tree = relay_config(
        fake.base_url,
        tmp_path / "data",
        upstream_models=["fake-model", "fake-constrained"],
        agent={"builtin_tools": ["current_time"]},
        models={"fake-constrained": {"tool_calling": "constrained"}},
    )
    yield relay_factory(tree=tree)


def _stream_content(server: RunningServer, model: str, timeout: float) -> tuple[str, str | None]:
    body = {"model": model, "messages": [{"role": "user", "content": "Print the table."}], "stream": True}
    with httpx.stream("POST", server.url("/v1/chat/completions"), json=body, headers={"authorization": "Bearer sk-test"}, timeout=timeout) as response:
        assert response.status_code == 200
        raw = response.read()
    chunks = [e.json for e in data_events(raw) if not e.is_done]
    content = "".join(c["delta"].get("content") or "" for chunk in chunks for c in chunk.get("choices") or [])
    finish = [c["finish_reason"] for chunk in chunks for c in chunk.get("choices") or [] if c.get("finish_reason")]
    return content, finish[-1] if finish else None


def _pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


@pytest.mark.parametrize("marker", ["", "<tool_call>", "```"], ids=["prose", "after-tag", "after-fence"])
def test_two_megabyte_answer_in_small_chunks(server: RunningServer, fake: FakeUpstream, marker: str) -> None:
    text = marker + ROW * (2_000_000 // len(ROW))
    fake.enqueue(Reply(content=text, chunk_tokens=_pieces(text, 256)))
    started = time.monotonic()
    content, finish = _stream_content(server, "agent/fake-model", GENEROUS_SECONDS)
    assert time.monotonic() - started < GENEROUS_SECONDS
    assert content == text and finish == "stop"  # not a call: all of it is the answer


def test_two_megabyte_constrained_answer_in_small_chunks(server: RunningServer, fake: FakeUpstream) -> None:
    text = "<tool_call>" + ROW * (2_000_000 // len(ROW))
    step = '{"answer": ' + json.dumps(text) + "}"
    fake.enqueue(Reply(content=step, chunk_tokens=_pieces(step, 256)))
    started = time.monotonic()
    content, finish = _stream_content(server, "agent/fake-constrained", GENEROUS_SECONDS)
    assert time.monotonic() - started < GENEROUS_SECONDS
    assert content == text and finish == "stop"


@pytest.mark.parametrize(
    "text",
    ["<tool_call>{" + " " * 200_000 + "x", "```" + " " * 200_000 + "x", "Sure. <tool_call>[" + " \t" * 100_000 + "]</tool_call>"],
    ids=["open-tag", "open-fence", "closed-tag"],
)
def test_pathological_output_does_not_stall_health(server: RunningServer, fake: FakeUpstream, text: str) -> None:
    fake.enqueue(Reply(content=text, chunk_tokens=_pieces(text, 4096)))
    result: dict[str, Any] = {}

    def ask() -> None:
        try:
            result["content"], result["finish"] = _stream_content(server, "agent/fake-model", GENEROUS_SECONDS)
        except Exception as exc:  # noqa: BLE001 - reported below
            result["error"] = exc

    thread = threading.Thread(target=ask, daemon=True)
    thread.start()
    (rec,) = fake.wait_for_requests(1)
    assert rec.wait_done(30)  # the whole answer has reached the relay: it is parsing now
    health = httpx.get(server.url("/health"), timeout=10)
    assert health.status_code == 200
    thread.join(GENEROUS_SECONDS)
    assert not thread.is_alive(), "the agent request did not finish"
    assert "error" not in result, result
    assert result["content"] == text  # released as text: not a call of an offered tool


def test_collecting_many_small_deltas_is_linear() -> None:
    # BodyCollector (the one body builder for non-streaming clients) appended
    # with `message[key] + piece`, copying the whole text per delta: measured
    # 10 s for 31,000 deltas of 64 characters and 140 s for 120,000, against
    # 0.02 s and 0.08 s now. 60,000 deltas of content and of tool-call
    # arguments must take well under the bound.
    from toolrelay.app.encoder import BodyCollector
    from toolrelay.app.events import ChoiceDelta

    collector = BodyCollector()
    piece = "x" * 64
    started = time.monotonic()
    collector.add(ChoiceDelta(0, {"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": ""}}]}))
    for _ in range(60_000):
        collector.add(ChoiceDelta(0, {"content": piece}))
        collector.add(ChoiceDelta(0, {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}))
    message = collector.body(model="m")["choices"][0]["message"]
    assert time.monotonic() - started < 10.0
    assert message["content"] == piece * 60_000
    assert message["tool_calls"] == [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": piece * 60_000}}]
