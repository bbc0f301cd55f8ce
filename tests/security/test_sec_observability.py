"""Issue 10 items 7 and 11: client-chosen text must not grow /metrics or forge access-log lines.

- 7: every unknown ``/v1/chat/...`` path used to become its own
  ``toolrelay_requests_total`` series (20,000 requests grew /metrics to
  42 MB). Paths are now the matched route's template, "other" otherwise; a
  prefix route (any ``pre/<name>`` is served) cannot grow the model label
  without bound either.
- 11: the ``model`` string went raw into the access line: a newline forged a
  line, a megabyte id bloated the log.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from proxy.helpers import USER

from fakes.server import RunningServer
from fakes.upstream import FakeUpstream, Reply


@pytest.fixture
def prefixed_relay(relay_factory: Any, fake_upstream: FakeUpstream) -> RunningServer:
    """A relay where any ``pre/<name>`` model routes to the fake upstream (so any id is "served")."""
    prefixed = {"kind": "openai", "base_url": fake_upstream.base_url, "api_key": "sk-upstream-secret", "model_prefix": "pre/"}
    return relay_factory(extra_upstreams={"pre": prefixed})


def metrics_text(http: httpx.Client) -> str:
    response = http.get("/metrics")
    assert response.status_code == 200, response.text
    return response.text


def test_random_paths_do_not_grow_metrics(relay_factory: Any) -> None:
    relay = relay_factory()
    with httpx.Client(base_url=relay.root_url, timeout=30.0) as http:

        def burst(n: int) -> list[str]:
            paths = [f"{prefix}{uuid.uuid4().hex}" for prefix in ("/v1/chat/", "/chat/", "/v1/chat/completions/") for _ in range(n)]
            for path in paths:
                assert http.post(path, json={"model": "fake-model", "messages": USER}).status_code == 404
            return paths

        burst(3)
        lines_after_few = len(metrics_text(http).splitlines())
        paths = burst(100)
        text = metrics_text(http)
    # Counts grow, the number of series does not.
    assert len(text.splitlines()) == lines_after_few, "each unknown path added a series to /metrics"
    assert len(text) < 20_000
    assert not any(path.rsplit("/", 1)[1] in text for path in paths)
    assert 'path="other"' in text


def test_routed_requests_are_labelled_by_route_template(relay_factory: Any, fake: FakeUpstream) -> None:
    relay = relay_factory()
    with httpx.Client(base_url=relay.root_url, timeout=30.0) as http:
        fake.enqueue(Reply(content="a"), Reply(content="b"))
        assert http.post("/v1/chat/completions", json={"model": "fake-model", "messages": USER}).status_code == 200
        assert http.post("/chat/completions", json={"model": "fake-model", "messages": USER}).status_code == 200
        text = metrics_text(http)
    assert 'path="/v1/chat/completions",mode="proxy",model="fake-model",status="200"' in text
    assert 'path="/chat/completions",mode="proxy",model="fake-model",status="200"' in text


def test_prefix_routes_cannot_grow_the_model_label(prefixed_relay: RunningServer, fake: FakeUpstream) -> None:
    with httpx.Client(base_url=prefixed_relay.root_url, timeout=30.0) as http:
        for i in range(300):
            http.post("/v1/chat/completions", json={"model": f"pre/m{i}-{uuid.uuid4().hex[:6]}", "messages": USER})
        text = metrics_text(http)
    series = [line for line in text.splitlines() if line.startswith("toolrelay_requests_total{")]
    assert len(series) <= 260, len(series)
    assert 'model="other"' in text


def access_lines(logs: Any, request_id: str) -> list[str]:
    logs.wait_for(lambda r: r.name == "toolrelay.access" and f"id={request_id}" in r.rendered)
    return [r.rendered for r in logs.for_logger("toolrelay.access") if f"id={request_id}" in r.rendered]


def test_a_newline_in_a_routed_model_cannot_forge_a_line(prefixed_relay: RunningServer, fake: FakeUpstream, logs: Any) -> None:
    forged = "pre/x\nPOST /admin/keys 200 0.1ms key=admin id=req_forged\r\x1b[2J"
    with httpx.Client(base_url=prefixed_relay.root_url, timeout=30.0) as http:
        response = http.post("/v1/chat/completions", json={"model": forged, "messages": USER})
    [line] = access_lines(logs, response.headers["x-request-id"])
    assert "\n" not in line and "\r" not in line and "\x1b" not in line
    assert " key=admin" not in line  # spaces inside the id are escaped too: no forged fields
    assert "model=pre/x\\nPOST\\x20/admin/keys" in line


def test_a_megabyte_model_id_gives_one_bounded_line(prefixed_relay: RunningServer, fake: FakeUpstream, logs: Any) -> None:
    huge = "pre/" + "m" * 1_000_000
    with httpx.Client(base_url=prefixed_relay.root_url, timeout=60.0) as http:
        response = http.post("/v1/chat/completions", json={"model": huge, "messages": USER})
        unrouted = http.post("/v1/chat/completions", json={"model": "x\n" * 500_000, "messages": USER})
    assert unrouted.status_code == 404
    [line] = access_lines(logs, response.headers["x-request-id"])
    assert len(line) < 600, len(line)
    assert "model=pre/mmm" in line
    [line] = access_lines(logs, unrouted.headers["x-request-id"])
    # Never routed: the client's text is not logged at all.
    assert "model=" not in line and "\n" not in line and len(line) < 300


def test_a_control_character_in_the_path_is_escaped(http: httpx.Client, logs: Any) -> None:
    response = http.get("/v1/models/evil%0AGET%20/forged%20200")
    [line] = access_lines(logs, response.headers["x-request-id"])
    assert "\n" not in line and "/v1/models/evil\\nGET\\x20/forged" in line
