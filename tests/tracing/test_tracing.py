"""Spans at a local OTLP receiver, over real HTTP with the OpenAI SDK: the client's trace continued, GenAI attributes, trace context sent upstream."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import textwrap
from pathlib import Path

from fakes.clients import sdk
from fakes.otlp import OtlpReceiver, ReceivedSpan
from fakes.server import RunningServer
from fakes.upstream import FakeUpstream, Reply

# Text only the client and the upstream see: it must never reach a span.
SECRET_WORDS = "zebra-quartz-7781"
UPSTREAM_KEY = "sk-upstream-secret"


def _traceparent() -> tuple[str, str, str]:
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


def _one(spans: list[ReceivedSpan], kind: str, name_prefix: str = "") -> ReceivedSpan:
    found = [s for s in spans if s.kind == kind and s.name.startswith(name_prefix)]
    assert len(found) == 1, [(s.name, s.kind) for s in spans]
    return found[0]


def _no_secrets(spans: list[ReceivedSpan]) -> None:
    for span in spans:
        text = json.dumps(span.attributes)
        assert SECRET_WORDS not in text and UPSTREAM_KEY not in text and "sk-test" not in text, span


def _upstream_trace(up: FakeUpstream, trace_id: str) -> tuple[str, str]:
    """The parent span id the upstream's traceparent names, and its x-request-id."""
    headers = up.last_request.headers
    version, upstream_trace, parent, flags = headers["traceparent"].split("-")
    assert (version, upstream_trace, flags) == ("00", trace_id, "01")
    return parent, headers["x-request-id"]


def test_a_proxy_request_continues_the_clients_trace(relay: RunningServer, receiver: OtlpReceiver, up: FakeUpstream) -> None:
    traceparent, trace_id, client_span = _traceparent()
    up.enqueue(Reply(content="The answer.", usage={"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}))
    with sdk(relay, default_headers={"traceparent": traceparent}) as client:
        raw = client.chat.completions.with_raw_response.create(model="fake-model", messages=[{"role": "user", "content": SECRET_WORDS}])
    request_id = raw.headers["x-request-id"]

    spans = receiver.wait_for(trace_id, lambda s: {x.kind for x in s} >= {"server", "client"})
    server = _one(spans, "server")
    assert server.parent_span_id == client_span
    assert server.name == "POST /v1/chat/completions"
    assert server.attributes["http.request.method"] == "POST"
    assert server.attributes["http.route"] == "/v1/chat/completions"
    assert server.attributes["http.response.status_code"] == 200
    assert server.attributes["toolrelay.request_id"] == request_id
    assert server.resource["service.name"] == "toolrelay-test"

    upstream_call = _one(spans, "client")
    assert upstream_call.parent_span_id == server.span_id
    assert upstream_call.name == "chat fake-model"
    attrs = upstream_call.attributes
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.provider.name"] == "openai" and attrs["gen_ai.system"] == "openai"
    assert attrs["gen_ai.request.model"] == "fake-model"
    assert attrs["gen_ai.usage.input_tokens"] == 11 and attrs["gen_ai.usage.output_tokens"] == 3
    assert attrs["gen_ai.response.finish_reasons"] == ["stop"]
    assert attrs["server.address"] == "127.0.0.1"
    assert not upstream_call.error

    parent, upstream_request_id = _upstream_trace(up, trace_id)
    assert parent == upstream_call.span_id
    assert upstream_request_id == request_id
    _no_secrets(spans)


def test_a_streamed_request_is_traced_to_its_end(relay: RunningServer, receiver: OtlpReceiver, up: FakeUpstream) -> None:
    traceparent, trace_id, client_span = _traceparent()
    up.enqueue(Reply(content="one two three four", usage={"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}))
    with sdk(relay) as client:
        stream = client.chat.completions.create(
            model="fake-model",
            messages=[{"role": "user", "content": SECRET_WORDS}],
            stream=True,
            stream_options={"include_usage": True},
            extra_headers={"traceparent": traceparent},
        )
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "one two three four"

    spans = receiver.wait_for(trace_id, lambda s: {x.kind for x in s} >= {"server", "client"})
    server = _one(spans, "server")
    assert server.parent_span_id == client_span
    upstream_call = _one(spans, "client")
    assert upstream_call.parent_span_id == server.span_id
    assert upstream_call.attributes["toolrelay.stream"] is True
    assert upstream_call.attributes["gen_ai.usage.output_tokens"] == 4
    assert upstream_call.attributes["gen_ai.response.finish_reasons"] == ["stop"]
    assert _upstream_trace(up, trace_id)[0] == upstream_call.span_id
    _no_secrets(spans)


def test_an_agent_run_has_step_and_tool_spans(relay: RunningServer, receiver: OtlpReceiver, up: FakeUpstream) -> None:
    traceparent, trace_id, _ = _traceparent()
    up.enqueue(
        Reply(tool_calls=[{"id": "call_time_1", "name": "current_time", "arguments": {"timezone": "UTC"}}]),
        Reply(content="It is late."),
    )
    with sdk(relay, default_headers={"traceparent": traceparent}) as client:
        answer = client.chat.completions.create(model="agent/fake-model", messages=[{"role": "user", "content": f"What time is it? {SECRET_WORDS}"}])
    assert answer.choices[0].message.content == "It is late."

    spans = receiver.wait_for(trace_id, lambda s: sum(x.kind == "client" for x in s) == 2 and any(x.kind == "server" for x in s))
    server = _one(spans, "server")
    run = _one(spans, "internal", "invoke_agent")
    assert run.parent_span_id == server.span_id
    assert run.attributes["gen_ai.operation.name"] == "invoke_agent"
    steps = sorted((s for s in spans if s.name.startswith("agent_step")), key=lambda s: s.attributes["toolrelay.agent.step"])
    assert [s.attributes["toolrelay.agent.step"] for s in steps] == [1, 2]
    assert all(s.parent_span_id == run.span_id for s in steps)

    tool = _one(spans, "internal", "execute_tool")
    assert tool.name == "execute_tool current_time"
    assert tool.parent_span_id == steps[0].span_id
    assert tool.attributes["gen_ai.operation.name"] == "execute_tool"
    assert tool.attributes["gen_ai.tool.name"] == "current_time"
    assert tool.attributes["gen_ai.tool.call.id"]  # the id the model saw (minted or the upstream's)
    assert not tool.error

    calls = [s for s in spans if s.kind == "client"]
    assert sorted(c.parent_span_id for c in calls) == sorted(s.span_id for s in steps)
    assert {tuple(c.attributes["gen_ai.response.finish_reasons"]) for c in calls} == {("tool_calls",), ("stop",)}
    # Each model call of the run carried its own span as the upstream parent.
    parents = {r.headers["traceparent"].split("-")[2] for r in up.chat_requests}
    assert parents == {c.span_id for c in calls}
    _no_secrets(spans)


def test_tracing_off_imports_no_sdk_and_sends_no_traceparent(tmp_path: Path) -> None:
    """A fresh process (this one has the SDK loaded by the relay above) serving a request with the default settings."""
    script = textwrap.dedent(
        """
        import json, sys
        from fakes.relays import agent_tree, start_relay
        from fakes.clients import sdk
        from fakes.upstream import FakeUpstream
        from pathlib import Path
        work = Path(sys.argv[1])
        with FakeUpstream(models=[]) as up:
            relay = start_relay(work, agent_tree(up, work / "data"))
            try:
                with sdk(relay, default_headers={"traceparent": "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"}) as client:
                    client.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "hi"}])
                    client.chat.completions.create(model="agent/fake-model", messages=[{"role": "user", "content": "hi"}])
                headers = up.last_request.headers
            finally:
                relay.stop()
        loaded = sorted(m for m in sys.modules if m.startswith(("opentelemetry.sdk", "opentelemetry.exporter", "toolrelay.app.tracing.otel")))
        print(json.dumps({"loaded": loaded, "traceparent": headers.get("traceparent"), "request_id": headers.get("x-request-id")}))
        """
    )
    tests_dir = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(tests_dir) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=120, env=env, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["loaded"] == []
    # The client's traceparent is not forwarded blindly: without tracing there is no span to name.
    assert result["traceparent"] is None
    assert result["request_id"].startswith("req_")
