"""``toolrelay serve --workers 2`` as a real process: one scrape of /metrics counts every request of every worker exactly once."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import openai
from operations.serve_process import ServeProcess

from fakes.upstream import FakeUpstream

PLAIN = 24
STREAMED = 8
ROUTED = 6


def _samples(text: str, name: str) -> dict[str, float]:
    """``{labels: value}`` of one metric family's samples (labels as written, "" for none)."""
    out: dict[str, float] = {}
    for match in re.finditer(rf"^{name}(\{{[^}}]*\}})? (\S+)$", text, re.MULTILINE):
        out[match.group(1) or ""] = float(match.group(2))
    return out


def _total(text: str, name: str, *must: str) -> float:
    return sum(v for labels, v in _samples(text, name).items() if all(m in labels for m in must))


def _fresh_client(base_url: str) -> openai.OpenAI:
    # A new connection per request, so the kernel hands requests to both workers.
    return openai.OpenAI(base_url=base_url, api_key="sk-test", max_retries=0, http_client=httpx.Client(limits=httpx.Limits(max_keepalive_connections=0)))


def test_one_scrape_counts_every_workers_requests_once(tmp_path: Path) -> None:
    with FakeUpstream(models=[]) as up:
        deployments = [{"upstream": "fake", "model": "fake-model", "name": name} for name in ("one", "two")]
        models = {"pool-model": {"deployments": deployments}}
        with ServeProcess(tmp_path, up.base_url, "--workers", "2", models=models) as relay:
            relay.wait_ready()
            # /ready answers as soon as one worker is up; wait until the second has opened its socket too.
            deadline = time.monotonic() + 20
            while _samples(httpx.get(relay.root_url + "/metrics", timeout=10).text, "toolrelay_metrics_workers") != {"": 2.0}:
                assert time.monotonic() < deadline, "the second worker never came up"
                time.sleep(0.1)
            client = _fresh_client(relay.base_url)
            for _ in range(PLAIN):
                client.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "hi"}])
            for _ in range(STREAMED):
                chunks = list(client.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "hi"}], stream=True))
                assert chunks
            for _ in range(ROUTED):
                client.chat.completions.create(model="pool-model", messages=[{"role": "user", "content": "hi"}])

            expected = PLAIN + STREAMED + ROUTED
            # A request is counted just after its last byte: wait until all are in, then require no more than that.
            deadline = time.monotonic() + 20
            while True:
                text = httpx.get(relay.root_url + "/metrics", timeout=10).text
                counted = _total(text, "toolrelay_requests_total", 'path="/v1/chat/completions"')
                if counted >= expected or time.monotonic() > deadline:
                    break
                time.sleep(0.1)

            assert counted == expected, text
            assert _total(text, "toolrelay_requests_total", 'model="fake-model"', 'status="200"') == PLAIN + STREAMED
            assert _total(text, "toolrelay_request_duration_seconds_count", 'mode="proxy"') == expected
            assert _total(text, "toolrelay_time_to_first_token_seconds_count", 'mode="proxy"') == STREAMED
            assert _total(text, "toolrelay_upstream_attempts_total", 'model="pool-model"', 'outcome="ok"') == ROUTED
            # The scrape itself is the one request in flight, over both workers.
            assert _samples(text, "toolrelay_requests_in_flight") == {"": 1.0}
            assert _samples(text, "toolrelay_metrics_workers") == {"": 2.0}
            assert relay.terminate() == 0
