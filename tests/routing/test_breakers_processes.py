"""Two real ``toolrelay serve`` processes sharing breaker state through one redis-server.

The in-process test (test_breakers.py) runs both relays in one interpreter;
here nothing but Redis connects them: failures seen by A open the breaker, and
B, which never saw a failure, reports it open and stops sending to the bad deployment.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from operations.serve_process import ServeProcess

from fakes.upstream import FakeUpstream, Reply
from fakes.waiting import wait_until

from .conftest import POOL, routing_tree

MESSAGES = [{"role": "user", "content": "hi"}]
ROUTING = {"breaker_failures": 2, "breaker_cooldown_seconds": 60.0, "breaker_sync_seconds": 0.1}


@pytest.fixture
def hosts(ups: dict[str, FakeUpstream], redis_url: str, tmp_path: Path) -> Iterator[tuple[ServeProcess, ServeProcess]]:
    started = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        tree = routing_tree(ups, tmp_path / name / "data", routing=ROUTING, redis={"url": redis_url, "prefix": "breakers-" + tmp_path.name[-8:]})
        started.append(ServeProcess(tmp_path / name, "", tree=tree))
    with started[0], started[1]:
        yield started[0].wait_ready(), started[1].wait_ready()


def _answered_by(host: ServeProcess) -> str:
    with openai.OpenAI(base_url=host.base_url, api_key="sk-none", max_retries=0) as client:
        raw = client.chat.completions.with_raw_response.create(model=POOL, messages=MESSAGES)  # type: ignore[arg-type]
        return raw.headers["x-toolrelay-deployment"]


def _state(host: ServeProcess, deployment: str) -> int | None:
    import httpx

    marker = f'toolrelay_deployment_state{{model="{POOL}",deployment="{deployment}"}} '
    for line in httpx.get(host.root_url + "/metrics", timeout=10).text.splitlines():
        if line.startswith(marker):
            return int(line[len(marker) :])
    return None


def test_failures_through_one_process_open_the_breaker_for_the_other(hosts: tuple[ServeProcess, ServeProcess], ups: dict[str, FakeUpstream]) -> None:
    a, b = hosts
    # Both healthy: priority routing sends each host's request to deployment a.
    assert _answered_by(a) == "a" and _answered_by(b) == "a"
    assert _state(b, "a") == 0
    ups["a"].default_reply = Reply(status=500)
    # Two failures through A (each retried on b, so the client never sees them) open a's breaker.
    assert [_answered_by(a), _answered_by(a)] == ["b", "b"]
    failed_on_a = len(ups["a"].chat_requests)
    assert failed_on_a == 4  # the healthy request of each host, then A's two failures
    # B saw no failure itself: it learns of the open breaker through Redis.
    wait_until(lambda: _state(b, "a") == 2, timeout=5.0, what="B reporting deployment a open")
    assert all(_answered_by(b) == "b" for _ in range(3))
    assert len(ups["a"].chat_requests) == failed_on_a  # B sent nothing to the open deployment
