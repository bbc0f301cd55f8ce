"""Streamed agent steps survive both official SDKs' stream accumulators (issue 10 item 26).

The Python SDK's ``accumulate_delta`` merges list entries by ``index``; the
Node SDK's ``ChatCompletionStream`` assigns unknown delta fields over the
previous value, so a field streamed one record at a time kept only the last
record there. Each test runs a real relay (fake upstream scripted for three
built-in steps) and the real SDK, and compares the accumulated message with
the non-streaming one.

The Node test needs ``npm ci`` in ``tests/node``; without ``node_modules`` it
skips, unless ``TOOLRELAY_REQUIRE_NODE=1`` (CI) makes that a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import openai
import pytest
from agent_helpers import USER, extra, steps_of

from fakes.server import RunningServer
from fakes.upstream import FakeUpstream, Reply

NODE_DIR = Path(__file__).resolve().parents[1] / "node"
NODE_SCRIPT = NODE_DIR / "stream_final_message.mjs"
ANSWER = "It is noon in UTC, 13:00 in Paris and 21:00 in Tokyo."
ZONES = ["UTC", "Europe/Paris", "Asia/Tokyo"]


def script_three_steps(fake: FakeUpstream) -> None:
    fake.enqueue(*(Reply(tool_calls=[{"name": "current_time", "arguments": {"timezone": zone}}]) for zone in ZONES), Reply(content=ANSWER))


def check_steps(steps: Any) -> None:
    assert isinstance(steps, list), steps
    assert [s.get("index") for s in steps] == list(range(6)), steps
    assert [(s["type"], s["step"]) for s in steps] == [(t, n) for n in (1, 2, 3) for t in ("tool_call", "tool_result")], steps
    assert [s["arguments"] for s in steps if s["type"] == "tool_call"] == [{"timezone": z} for z in ZONES]
    assert all(s["status"] == "ok" and s["tool"] == "current_time" for s in steps if s["type"] == "tool_result"), steps
    for call, result in zip(steps[::2], steps[1::2], strict=False):
        assert call["call_id"] == result["call_id"], (call, result)


def non_streaming_steps(oai: openai.OpenAI, fake: FakeUpstream) -> list[dict[str, Any]]:
    script_three_steps(fake)
    completion = oai.chat.completions.create(model="agent/fake-model", messages=USER)
    steps = steps_of(completion.choices[0].message)
    check_steps(steps)
    fake.reset()
    return steps


def without_timing(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records minus what differs between two runs (ids, durations, the clock's reading)."""
    return [{k: v for k, v in s.items() if k not in ("call_id", "duration_ms", "summary")} for s in steps]


def test_python_sdk_stream_helper_keeps_every_step(oai: openai.OpenAI, fake: FakeUpstream) -> None:
    expected = non_streaming_steps(oai, fake)
    script_three_steps(fake)
    with oai.chat.completions.stream(model="agent/fake-model", messages=USER) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    message = final.choices[0].message
    assert message.content == ANSWER
    steps = extra(message, "agent_steps")
    check_steps(steps)
    assert without_timing(steps) == without_timing(expected)


def node_available() -> str:
    node = shutil.which("node")
    if node is None or not (NODE_DIR / "node_modules" / "openai").is_dir():
        reason = "the Node SDK test needs node and `npm ci --prefix tests/node` (tests/node/node_modules is missing)"
        if os.environ.get("TOOLRELAY_REQUIRE_NODE") == "1":
            pytest.fail(reason + "; TOOLRELAY_REQUIRE_NODE=1 requires it")
        pytest.skip(reason)
    return node


def node_stream(node: str, server: RunningServer, request: dict[str, Any]) -> dict[str, Any]:
    done = subprocess.run(
        [node, str(NODE_SCRIPT), server.base_url, "sk-test", json.dumps(request)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=NODE_DIR,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_node_sdk_stream_helper_keeps_every_step(agent_relay: RunningServer, oai: openai.OpenAI, fake: FakeUpstream) -> None:
    node = node_available()
    expected = non_streaming_steps(oai, fake)
    script_three_steps(fake)
    result = node_stream(node, agent_relay, {"model": "agent/fake-model", "messages": USER})
    assert result["finish_reason"] == "stop"
    message = result["message"]
    assert message["content"] == ANSWER
    check_steps(message.get("agent_steps"))
    assert without_timing(message["agent_steps"]) == without_timing(expected)
