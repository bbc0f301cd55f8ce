"""Issue #4 end to end: the built-in ``python`` tool through a real toolrelay.

The fake model only ever writes code and copies what the tool message says:
every value asserted here was computed in the sandbox, never by the test's
"model".
"""

from __future__ import annotations

import hashlib
import os
import secrets
import time

import httpx
import openai
import pytest
from e2e_helpers import (
    agent_steps,
    call,
    extra,
    last_tool_text,
    scripted,
    step_records,
    tool_messages,
)

from fakes.admin import ADMIN_KEY
from fakes.clients import sdk
from fakes.server import RunningServer
from fakes.upstream import FakeUpstream, Reply

MODEL = "agent/fake-model"


def sandbox_backend(relay: RunningServer) -> str:
    ready = httpx.get(relay.url("/ready"), timeout=15.0)
    assert ready.status_code == 200, ready.text
    block = ready.json()["sandbox"]
    assert block["available"] is True, f"no sandbox backend on this host: {block}"
    return block["backend"]


def copy_tool_output(prefix: str):
    """The model's last turn: answer with the tool's output, verbatim."""
    return lambda results: Reply(content=f"{prefix}\n{last_tool_text(results)}")


def test_ready_reports_the_sandbox(auth_e2e_relay: RunningServer) -> None:
    # The limits and interpreter are details: the admin key sees them.
    ready = httpx.get(auth_e2e_relay.url("/ready"), headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=15.0)
    assert ready.status_code == 200
    block = ready.json()["sandbox"]
    assert block["available"] is True
    assert block["backend"] in ("bwrap", "landlock")
    assert block["limits"], block
    assert block.get("python_version", "").startswith("3."), block


def test_python_tool_computes_in_the_sandbox(fake: FakeUpstream, oai: openai.OpenAI, e2e_relay: RunningServer) -> None:
    backend = sandbox_backend(e2e_relay)
    salt = secrets.token_hex(8)
    expected_hash = hashlib.sha256(salt.encode()).hexdigest()
    code = f"import hashlib\nprint(sum(i*i for i in range(1000)))\nprint(hashlib.sha256({salt!r}.encode()).hexdigest())"
    fake.responder = scripted(lambda _: call("python", code=code), copy_tool_output("The sandbox printed:"))

    completion = oai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Sum the squares below 1000 and hash my salt."}])

    message = completion.choices[0].message
    assert completion.choices[0].finish_reason == "stop"
    assert "332833500" in message.content
    assert expected_hash in message.content
    assert not message.tool_calls  # built-in calls never appear as tool_calls

    # The model received the result in a tool message, from the sandbox.
    requests = fake.chat_requests
    assert len(requests) == 2
    assert "python" in [t["function"]["name"] for t in requests[0].body["tools"]]
    results = tool_messages(requests[1].body)
    assert len(results) == 1 and "332833500" in results[0]["content"] and expected_hash in results[0]["content"]
    # Nothing the "model" sent contained the answers: they came from running the code.
    assert "332833500" not in str(requests[0].body)

    (tool_call,) = step_records(message, "tool_call", "python")
    (tool_result,) = step_records(message, "tool_result", "python")
    assert tool_call["arguments"] == {"code": code}
    assert tool_result["call_id"] == tool_call["call_id"]
    assert tool_result["status"] == "ok"
    assert tool_result["data"]["backend"] == backend
    assert tool_result["data"]["exit_code"] == 0
    assert tool_result["data"]["limit"] is None
    assert "332833500" in tool_result["summary"]
    reasoning = extra(message, "reasoning_content")
    assert isinstance(reasoning, str) and "Calling python(" in reasoning


def test_python_final_expression_value_streamed(fake: FakeUpstream, oai: openai.OpenAI) -> None:
    code = "import math\nmath.factorial(25)"
    fake.responder = scripted(lambda _: call("python", code=code), copy_tool_output("Value:"))

    with oai.chat.completions.stream(model=MODEL, messages=[{"role": "user", "content": "25!"}]) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()

    message = final.choices[0].message
    assert "15511210043330985984000000" in message.content
    steps = agent_steps(message)
    assert [s["index"] for s in steps] == list(range(len(steps)))
    (result,) = [s for s in steps if s["type"] == "tool_result"]
    assert result["status"] == "ok" and result["tool"] == "python"


def test_python_cannot_read_the_server_environment(fake: FakeUpstream, oai: openai.OpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    canary = "canary-" + secrets.token_hex(12)
    # The server runs in this process: this is its environment.
    monkeypatch.setenv("TOOLRELAY_E2E_CANARY", canary)
    code = (
        "import os\n"
        "print('env:', os.environ.get('TOOLRELAY_E2E_CANARY'))\n"
        "print('keys:', sorted(os.environ))\n"
        "try:\n"
        "    print('proc1:', open('/proc/1/environ', 'rb').read())\n"
        "except Exception as exc:\n"
        "    print('proc1 error:', type(exc).__name__)\n"
    )
    fake.responder = scripted(lambda _: call("python", code=code), copy_tool_output("Output:"))

    completion = oai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "What is in your environment?"}])

    message = completion.choices[0].message
    (result,) = step_records(message, "tool_result", "python")
    assert result["status"] == "ok", result
    tool_text = tool_messages(fake.last_body)[0]["content"]
    assert "env: None" in tool_text, tool_text
    assert canary not in tool_text
    assert canary not in message.content
    assert "TOOLRELAY_E2E_CANARY" not in tool_text.split("keys:", 1)[1]


def test_python_wall_limit_reported_and_run_continues(fake: FakeUpstream, e2e_relay_factory) -> None:
    relay = e2e_relay_factory(sandbox={"wall_seconds": 2.0, "cpu_seconds": 2.0})
    fake.responder = scripted(
        lambda _: call("python", code="while True:\n    pass"),
        lambda results: Reply(content="The code did not finish: " + last_tool_text(results).splitlines()[-1]),
    )
    with sdk(relay) as client:
        started = time.monotonic()
        completion = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Loop forever."}])
        elapsed = time.monotonic() - started

    assert elapsed < 20, f"the 2 s wall limit took {elapsed:.1f} s"
    message = completion.choices[0].message
    assert completion.choices[0].finish_reason == "stop"
    (result,) = step_records(message, "tool_result", "python")
    assert result["status"] == "error", result
    # Wall clock and CPU time are both 2 s: a busy loop may hit either first.
    assert result["data"]["limit"] in ("wall_time", "cpu"), result
    assert result["data"]["backend"] in ("bwrap", "landlock")
    assert "limit" in result["summary"]
    assert message.content.startswith("The code did not finish: stopped:"), message.content
    assert len(fake.chat_requests) == 2


def test_python_wall_limit_with_sleep_is_wall_time(fake: FakeUpstream, e2e_relay_factory) -> None:
    relay = e2e_relay_factory(sandbox={"wall_seconds": 2.0})
    fake.responder = scripted(
        lambda _: call("python", code="import time\nwhile True:\n    time.sleep(0.05)"),
        lambda results: Reply(content="Stopped. " + last_tool_text(results)),
    )
    with sdk(relay) as client:
        completion = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Sleep forever."}])

    message = completion.choices[0].message
    (result,) = step_records(message, "tool_result", "python")
    assert result["status"] == "error"
    assert result["data"]["limit"] == "wall_time", result
    assert "wall-clock limit of 2 s" in message.content


def test_python_exception_is_an_error_the_model_can_recover_from(fake: FakeUpstream, oai: openai.OpenAI) -> None:
    fake.responder = scripted(
        lambda _: call("python", code="1/0"),
        lambda _: call("python", code="print(7*6)"),
        copy_tool_output("Fixed:"),
    )
    completion = oai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Divide."}])

    message = completion.choices[0].message
    first, second = step_records(message, "tool_result", "python")
    assert first["status"] == "error" and "ZeroDivisionError" in first["summary"]
    assert second["status"] == "ok"
    assert message.content.endswith("42")


# ---------------------------------------------------------------------- containment of cut-off runs

NO_NEXT_TURN_GRACE_SECONDS = 0.3
FORK_AND_SLEEP = "import os, time\nprint('started', flush=True)\nif os.fork() == 0:\n    time.sleep(120)\ntime.sleep(120)\n"


def pool_of(relay: RunningServer) -> list[int]:
    from toolrelay.tools.sandbox.selector import pool_processes

    return pool_processes(relay.settings.sandbox)


def wait_pool_empty(relay: RunningServer, timeout: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        left = pool_of(relay)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def wait_pool_busy(relay: RunningServer, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pool_of(relay):
            return True
        time.sleep(0.02)
    return False


@pytest.mark.skipif(os.geteuid() != 0, reason="the sandbox uid pool exists only when the server runs as root")
def test_agent_tool_timeout_stops_the_sandbox_run(fake: FakeUpstream, e2e_relay_factory) -> None:
    relay = e2e_relay_factory(agent={"tool_timeout_seconds": 1.5, "max_wall_seconds": 60}, sandbox={"wall_seconds": 30.0, "cpu_seconds": 30.0})
    fake.responder = scripted(lambda _: call("python", code=FORK_AND_SLEEP), lambda results: Reply(content="Gave up: " + last_tool_text(results)))
    with sdk(relay) as client:
        started = time.monotonic()
        completion = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Sleep."}])
        elapsed = time.monotonic() - started

    assert elapsed < 15
    (result,) = step_records(completion.choices[0].message, "tool_result", "python")
    assert result["status"] == "timeout", result
    assert completion.choices[0].message.content.startswith("Gave up: error: python did not finish")
    assert wait_pool_empty(relay) == [], "sandbox processes outlived the timed-out tool call"


@pytest.mark.skipif(os.geteuid() != 0, reason="the sandbox uid pool exists only when the server runs as root")
def test_client_disconnect_stops_the_sandbox_run(fake: FakeUpstream, e2e_relay_factory) -> None:
    relay = e2e_relay_factory(sandbox={"wall_seconds": 30.0, "cpu_seconds": 30.0})
    fake.responder = scripted(lambda _: call("python", code=FORK_AND_SLEEP), lambda _: Reply(content="never"))
    with (
        httpx.Client(base_url=relay.root_url, timeout=30.0) as client,
        client.stream("POST", "/v1/chat/completions", json={"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "Sleep."}]}) as response,
    ):
        assert response.status_code == 200
        # Keep a reference: an abandoned iterator would close the connection at once.
        lines = response.iter_lines()
        for line in lines:
            if '"type":"tool_call"' in line:
                break
        assert wait_pool_busy(relay), "the python run never started"
        lines.close()
        # The connection is closed here, mid-run.
    assert wait_pool_empty(relay) == [], "sandbox processes outlived the client that asked for them"
    # Nothing observable marks "the run will not ask again": give a run that wrongly
    # carried on the time its next model call takes here (well under 0.1 s), then look.
    time.sleep(NO_NEXT_TURN_GRACE_SECONDS)
    assert len(fake.chat_requests) == 1  # the run did not go on to ask the model again


def test_sandbox_off_python_fails_closed_and_the_run_continues(fake: FakeUpstream, e2e_relay_factory) -> None:
    relay = e2e_relay_factory(sandbox={"backend": "off"})
    ready = httpx.get(relay.url("/ready"), timeout=15.0).json()
    assert ready["sandbox"]["backend"] == "off" and ready["sandbox"]["available"] is False
    fake.responder = scripted(lambda _: call("python", code="print(6*7)"), lambda results: Reply(content="No sandbox: " + last_tool_text(results)))
    with sdk(relay) as client:
        completion = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "6*7?"}])

    message = completion.choices[0].message
    (result,) = step_records(message, "tool_result", "python")
    assert result["status"] == "error" and result["data"]["backend"] == "off"
    assert "42" not in message.content
    offered = [t for t in fake.chat_requests[0].body["tools"] if t["function"]["name"] == "python"]
    assert offered and "disabled" in offered[0]["function"]["description"]


LARGE_OUTPUT_BUG = (
    "BUG: tools/python.py PythonTool.format() budgets only the section bodies against max_output_chars, "
    "not the 'stdout:'/'value: ' labels and the '[... N characters omitted ...]' marker, so a large stdout "
    "makes the text ~50 chars longer than agent.max_tool_output_chars; ToolRegistry.call then cuts its END "
    "(_truncate keeps the head), dropping the final expression's value and the traceback that the middle-clip "
    "was meant to keep"
)


@pytest.mark.parametrize(
    ("code", "must_see"),
    [
        ("print('A' * 100000)\n6 * 7", "value: 42"),
        ("print('A' * 100000)\n1 / 0", "ZeroDivisionError"),
        ("print('A' * 100000)\nprint('TAIL-MARK')", "TAIL-MARK"),
    ],
    ids=["final-value", "exception", "stdout-tail"],
)
def test_large_output_keeps_the_end_for_the_model(fake: FakeUpstream, oai: openai.OpenAI, code: str, must_see: str) -> None:
    # Default limits (agent.max_tool_output_chars = 16000).
    fake.responder = scripted(lambda _: call("python", code=code), lambda results: Reply(content=f"got {len(last_tool_text(results))} chars"))

    oai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Print a lot."}])

    text = tool_messages(fake.last_body)[0]["content"]
    assert "characters omitted" in text  # the middle of stdout was clipped...
    assert must_see in text  # ...so that the end survives
    assert "[output truncated" not in text  # and the registry never had to cut the end


def test_output_within_the_limit_reaches_the_model_whole(fake: FakeUpstream, oai: openai.OpenAI) -> None:
    fake.responder = scripted(lambda _: call("python", code="print('B' * 5000)\n6 * 7"), lambda results: Reply(content="ok"))

    completion = oai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Print some."}])

    text = tool_messages(fake.last_body)[0]["content"]
    assert text == "stdout:\n" + "B" * 5000 + "\n\nvalue: 42"
    (result,) = step_records(completion.choices[0].message, "tool_result", "python")
    assert "truncated" not in result


def test_two_python_calls_in_one_turn_run_concurrently(fake: FakeUpstream, oai: openai.OpenAI) -> None:
    code = "import time\nstart = time.time()\ntime.sleep(2.0)\nprint(f'span {start:.3f} {time.time():.3f}')"
    fake.responder = scripted(
        lambda _: Reply(tool_calls=[{"name": "python", "arguments": {"code": code}}, {"name": "python", "arguments": {"code": code + "\n'second'"}}]),
        lambda results: Reply(content="\n".join(m["content"] for m in results)),
    )

    completion = oai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Two at once."}])

    message = completion.choices[0].message
    results = step_records(message, "tool_result", "python")
    assert [r["status"] for r in results] == ["ok", "ok"]
    spans = [tuple(map(float, line.split()[1:])) for line in message.content.splitlines() if line.startswith("span ")]
    assert len(spans) == 2
    (_s1, e1), (s2, _e2) = sorted(spans)
    assert s2 < e1, f"the two runs did not overlap: {spans}"  # max_concurrent = 2
    # Each result went back under its own call id.
    calls = step_records(message, "tool_call", "python")
    assert {r["call_id"] for r in results} == {c["call_id"] for c in calls} and len(calls) == 2
    ids = [m["tool_call_id"] for m in tool_messages(fake.last_body)]
    assert sorted(ids) == sorted(c["call_id"] for c in calls)


def test_python_cannot_reach_the_network_or_the_servers_files(fake: FakeUpstream, oai: openai.OpenAI, e2e_relay: RunningServer) -> None:
    config_path = str(e2e_relay.settings.server.data_dir)
    code = (
        "import socket, os, glob\n"
        f"for port in ({e2e_relay.port}, {fake.port}):\n"
        "    try:\n"
        "        socket.create_connection(('127.0.0.1', port), timeout=1).close()\n"
        "        print('connected', port)\n"
        "    except OSError as exc:\n"
        "        print('no network', port, type(exc).__name__)\n"
        f"print('data dir visible:', os.path.exists({config_path!r}))\n"
        "print('venv visible:', bool(glob.glob('/work/*')))\n"
    )
    requests_before = len(fake.requests)
    fake.responder = scripted(lambda _: call("python", code=code), copy_tool_output("Probe:"))

    completion = oai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Probe."}])

    content = completion.choices[0].message.content
    assert "connected" not in content, content
    assert content.count("no network") == 2
    assert "data dir visible: False" in content
    assert "venv visible: False" in content
    assert len(fake.requests) == requests_before + 2  # only the agent's own two model calls


def test_memory_limit_is_reported(fake: FakeUpstream, oai: openai.OpenAI) -> None:
    fake.responder = scripted(lambda _: call("python", code="x = bytearray(2 * 1024 ** 3)\nprint('allocated')"), copy_tool_output("Result:"))

    completion = oai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Allocate 2 GB."}])

    message = completion.choices[0].message
    (result,) = step_records(message, "tool_result", "python")
    assert result["status"] == "error", result
    assert "allocated" not in message.content
    assert result["data"]["limit"] == "memory" or "MemoryError" in message.content, (result, message.content)
