"""Issue 10 item 2: client JSON Schemas froze the server and stayed in memory.

Before: tool schemas were meta-validated with jsonschema on the event loop,
before authentication and admission, and cached by their full text. One tool
with 50,000 properties stalled ``/health`` for 20 s; ten 16 MB schemas kept
140 MB resident. Now: size/object/depth caps refuse them cheaply, the
meta-validation runs after admission in worker threads under a time limit,
and the cache holds digests and verdicts only.
"""

from __future__ import annotations

import gc
import threading
import time
import tracemalloc
from collections.abc import Callable
from typing import Any, Self

import httpx
import pytest
from proxy.helpers import assert_openai_error

from fakes.admin import ADMIN_KEY, Admin
from fakes.relays import auth_tree
from fakes.server import RunningServer, load_toml_settings, run_toolrelay
from fakes.upstream import FakeUpstream
from toolrelay.app.schema_check import SchemaChecker, SchemaLimits

USER = [{"role": "user", "content": "hi"}]
MiB = 1024 * 1024


def _tool(parameters: dict[str, Any], name: str = "lookup") -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "parameters": parameters}}


def _wide_schema(properties: int) -> dict[str, Any]:
    return {"type": "object", "properties": {f"p{i}": {"type": "string", "description": "x"} for i in range(properties)}}


class HealthProbe:
    """Polls /health in a thread and records each answer's latency, to show the loop stayed free."""

    def __init__(self, root_url: str) -> None:
        self._http = httpx.Client(base_url=root_url, timeout=60.0)
        self._stop = threading.Event()
        self.latencies: list[float] = []
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            response = self._http.get("/health")
            assert response.status_code == 200
            self.latencies.append(time.monotonic() - started)
            time.sleep(0.02)

    def __enter__(self) -> Self:
        self._thread.start()
        time.sleep(0.1)
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.1)
        self._stop.set()
        self._thread.join(timeout=90)
        self._http.close()


def _timed_post(http: httpx.Client, body: dict[str, Any], **kwargs: Any) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = http.post("/v1/chat/completions", json=body, **kwargs)
    return response, time.monotonic() - started


def test_fifty_thousand_properties_refused_fast_and_health_answers(relay: RunningServer, http: httpx.Client, fake: FakeUpstream) -> None:
    body = {"model": "fake-model", "messages": USER, "tools": [_tool(_wide_schema(50_000))]}
    with HealthProbe(relay.root_url) as probe:
        response, elapsed = _timed_post(http, body)
    err = assert_openai_error(response, 400, code="schema_too_complex", param="tools[0].function.parameters")
    assert "max_schema_objects" in err["message"]
    # Before: 14-20 s on the event loop. Wide bounds: the VM is noisy.
    assert elapsed < 5, elapsed
    assert probe.latencies and max(probe.latencies) < 2, probe.latencies
    assert fake.chat_requests == []


def test_sixteen_megabyte_schema_refused_by_size(relay_factory: Callable[..., RunningServer], fake: FakeUpstream) -> None:
    server = relay_factory(server={"max_body_bytes": 40 * MiB})
    schema = {"type": "object", "description": "x" * (16 * MiB), "properties": {"q": {"type": "string"}}}
    body = {"model": "fake-model", "messages": USER, "tools": [_tool(schema)]}
    with httpx.Client(base_url=server.root_url, timeout=60.0) as http, HealthProbe(server.root_url) as probe:
        response, elapsed = _timed_post(http, body)
    err = assert_openai_error(response, 400, code="schema_too_complex", param="tools[0].function.parameters")
    assert "max_schema_bytes" in err["message"]
    assert elapsed < 10, elapsed
    assert max(probe.latencies) < 2, probe.latencies
    assert fake.chat_requests == []


def test_deep_schema_refused_by_depth(http: httpx.Client, fake: FakeUpstream) -> None:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(40):  # 80 JSON levels: properties -> name -> schema
        schema = {"type": "object", "properties": {"a": schema}}
    response = http.post(
        "/v1/chat/completions",
        json={"model": "fake-model", "messages": USER, "response_format": {"type": "json_schema", "json_schema": {"name": "deep", "schema": schema}}},
    )
    err = assert_openai_error(response, 400, code="schema_too_complex", param="response_format.json_schema.schema")
    assert "max_schema_depth" in err["message"]
    assert fake.chat_requests == []


def test_slow_schema_hits_the_time_limit_and_health_answers(relay_factory: Callable[..., RunningServer], fake: FakeUpstream) -> None:
    # 4,000 properties are within the caps and take 1-2 s to meta-validate; the limit here is 0.05 s.
    server = relay_factory(server={"max_body_bytes": 8 * MiB, "schema_check_seconds": 0.05})
    body = {"model": "fake-model", "messages": USER, "tools": [_tool(_wide_schema(4_000))]}
    with httpx.Client(base_url=server.root_url, timeout=60.0) as http, HealthProbe(server.root_url) as probe:
        response, elapsed = _timed_post(http, body)
        err = assert_openai_error(response, 400, code="schema_too_complex", param="tools[0].function.parameters")
        assert "schema_check_seconds" in err["message"]
        assert elapsed < 5, elapsed
        # A small valid schema still goes through while the abandoned check finishes.
        ok = http.post("/v1/chat/completions", json={"model": "fake-model", "messages": USER, "tools": [_tool(_wide_schema(3))]})
        assert ok.status_code == 200, ok.text
    assert max(probe.latencies) < 2, probe.latencies


def test_invalid_schema_still_refused_after_admission(http: httpx.Client, fake: FakeUpstream) -> None:
    bad = {"type": "object", "properties": {"q": {"type": "not-a-type"}}}
    response = http.post("/v1/chat/completions", json={"model": "fake-model", "messages": USER, "tools": [_tool(bad)]})
    assert_openai_error(response, 400, code="invalid_function_parameters", param="tools[0].function.parameters")
    response = http.post(
        "/v1/chat/completions",
        json={"model": "fake-model", "messages": USER, "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": bad}}},
    )
    assert_openai_error(response, 400, code="invalid_schema", param="response_format.json_schema.schema")
    assert fake.chat_requests == []


@pytest.fixture
def keyed_relay(fake_upstream: FakeUpstream, tmp_path: Any) -> Any:
    tree = auth_tree(fake_upstream, tmp_path / "data", server={"max_body_bytes": 8 * MiB, "schema_check_seconds": 0.05})
    server = run_toolrelay(load_toml_settings(tmp_path / "toolrelay.toml", tree))
    yield server
    server.stop()


def test_schema_is_checked_only_after_authentication_and_admission(keyed_relay: RunningServer, fake: FakeUpstream) -> None:
    """An unknown key gets 401 and a key over its rpm gets 429, both without the schema being compiled.

    The schema is one that fails meta-validation (with schema_check_seconds = 0.05,
    a big one also fails by time): had it been checked first, the answer would be a 400.
    """
    admin = Admin(keyed_relay)
    try:
        _, key = admin.create_key("schemas", rpm=1)
    finally:
        admin.close()
    bad = _wide_schema(4_000)
    bad["properties"]["p0"]["type"] = "not-a-type"
    body = {"model": "fake-model", "messages": USER, "tools": [_tool(bad)]}
    with httpx.Client(base_url=keyed_relay.root_url, timeout=60.0) as http:
        response = http.post("/v1/chat/completions", json=body, headers={"authorization": "Bearer tr-nothere-0000000000000000000000000000"})
        assert_openai_error(response, 401)
        response = http.post("/v1/chat/completions", json=body, headers={"authorization": f"Bearer {ADMIN_KEY}x"})
        assert_openai_error(response, 401)
        mine = {"authorization": f"Bearer {key}"}
        first = http.post("/v1/chat/completions", json={"model": "fake-model", "messages": USER}, headers=mine)
        assert first.status_code == 200, first.text
        second = http.post("/v1/chat/completions", json=body, headers=mine)
        assert_openai_error(second, 429)
    assert len(fake.chat_requests) == 1


async def test_verdict_cache_keeps_no_schema() -> None:
    """Distinct large schemas leave nothing behind; verdicts are cached by digest, bounded in count."""
    checker = SchemaChecker(SchemaLimits(max_bytes=4 * MiB, cache_entries=4))
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(10):
            schema = {"type": "object", "description": f"{i}" + "x" * MiB}
            await checker.check({"tools": [_tool(schema)]})
            del schema
        gc.collect()
        retained = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # Before: the lru_cache kept every schema's full text (10 MB here).
    assert retained < MiB, retained
    assert len(checker.cache) == 4
    # A cached verdict is reused: the same invalid schema is refused again, from the cache.
    bad = {"type": "not-a-type"}
    for _ in range(2):
        with pytest.raises(Exception) as caught:
            await checker.check({"response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": bad}}})
        assert getattr(caught.value, "status", None) == 400
    assert checker.cache.get(checker.cache.digest(bad)) == (True, caught.value.message.split(": ", 1)[1])  # type: ignore[attr-defined]
