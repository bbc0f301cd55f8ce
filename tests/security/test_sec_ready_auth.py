"""Issue 10 items 15 and 21: /ready and failed credentials.

- 15: /ready was anonymous, called every upstream with the operator's key on
  every hit, and showed sandbox paths and the model path. The probe is now
  cached (single flight) and details need the admin key while auth is on.
- 21: wrong admin keys (and API keys) were not throttled: brute force ran at
  the server's full request rate.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import orjson
import pytest

from fakes.server import RunningServer
from fakes.upstream import FakeUpstream
from toolrelay.app.auth.throttle import FailedAuthThrottle

ADMIN = "ready-admin-key-0123456789abcdef"
WINDOW = 4.0
MAX_FAILED = 5


def model_probes(fake: FakeUpstream) -> int:
    return sum(1 for r in fake.requests if r.method == "GET" and r.path.endswith("/models"))


def test_ready_probes_the_upstream_once_for_many_hits(relay_factory: Any, fake: FakeUpstream) -> None:
    # One upstream: one GET /models per probe; a cache time no slow machine outlasts.
    relay = relay_factory(extra_upstreams={}, server={"ready_cache_seconds": 300})
    before = model_probes(fake)
    url = relay.url("/ready")
    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(lambda _: httpx.get(url, timeout=30.0).status_code, range(32)))
    statuses += [httpx.get(url, timeout=30.0).status_code for _ in range(10)]
    assert statuses == [200] * 42
    assert model_probes(fake) - before == 1


def test_ready_probe_is_refreshed_after_the_cache_time(relay_factory: Any, fake: FakeUpstream) -> None:
    relay = relay_factory(extra_upstreams={}, server={"ready_cache_seconds": 0.5})
    before = model_probes(fake)
    assert httpx.get(relay.url("/ready"), timeout=30.0).json()["status"] == "ready"
    fake.models_status = 500
    time.sleep(1.0)
    assert httpx.get(relay.url("/ready"), timeout=30.0).status_code == 503
    assert model_probes(fake) - before == 2


@pytest.fixture
def auth_relay(relay_factory: Any) -> RunningServer:
    return relay_factory(auth={"admin_key": ADMIN, "max_failed_auth": MAX_FAILED, "failed_auth_window_seconds": WINDOW})


def test_anonymous_ready_shows_only_the_status(auth_relay: RunningServer) -> None:
    anonymous = httpx.get(auth_relay.url("/ready"), timeout=30.0)
    assert anonymous.status_code == 200
    assert anonymous.json() == {"status": "degraded"}  # the session's "dead" upstream is down
    admin = httpx.get(auth_relay.url("/ready"), headers={"authorization": f"Bearer {ADMIN}"}, timeout=30.0).json()
    assert {u["name"] for u in admin["upstreams"]} == {"fake", "slow", "dead"}
    assert any(u.get("detail") for u in admin["upstreams"])
    assert "sandbox" in admin or "models" in admin
    # A wrong key is no way in (and no 401 oracle either).
    wrong = httpx.get(auth_relay.url("/ready"), headers={"authorization": "Bearer not-the-admin-key-xxxxxxx"}, timeout=30.0)
    assert wrong.json() == {"status": "degraded"}


def test_ready_never_shows_paths_to_anonymous(auth_relay: RunningServer) -> None:
    text = httpx.get(auth_relay.url("/ready"), timeout=30.0).text
    for leak in ("/", "python", "model_path", "sandbox", "upstreams", "unreachable"):
        assert leak not in text, text


def guess(http: httpx.Client, path: str, key: str) -> httpx.Response:
    return http.get(path, headers={"authorization": f"Bearer {key}"})


def test_brute_forcing_the_admin_key_gets_429(auth_relay: RunningServer) -> None:
    other = httpx.Client(base_url=auth_relay.root_url, timeout=30.0, transport=httpx.HTTPTransport(local_address="127.0.0.2"))
    with httpx.Client(base_url=auth_relay.root_url, timeout=30.0) as http, other:
        for i in range(MAX_FAILED):
            assert guess(http, "/admin/keys", f"guess-{i:026d}").status_code == 401
        refused = guess(http, "/admin/keys", "guess-one-more-000000000000")
        assert refused.status_code == 429, refused.text
        err = refused.json()["error"]
        assert err["type"] == "rate_limit_error" and err["code"] == "too_many_failed_attempts"
        assert 1 <= int(refused.headers["retry-after"]) <= WINDOW
        # The right key from the same address is not even checked now...
        assert guess(http, "/admin/keys", ADMIN).status_code == 429
        assert guess(http, "/v1/models", ADMIN).status_code == 429
        # ...another address is not affected...
        assert guess(other, "/admin/keys", ADMIN).status_code == 200
        # ...and the address is let in again after the window.
        time.sleep(WINDOW + 0.5)
        assert guess(http, "/admin/keys", ADMIN).status_code == 200


@pytest.mark.parametrize("path", ["/v1/models", "/metrics", "/ready", "/v1/memories/export"])
def test_every_door_counts_wrong_guesses(auth_relay: RunningServer, path: str) -> None:
    with httpx.Client(base_url=auth_relay.root_url, timeout=30.0) as http:
        for i in range(MAX_FAILED):
            guess(http, path, f"guess-{i:026d}")
        assert guess(http, "/admin/keys", ADMIN).status_code == 429


def test_wrong_api_keys_are_throttled_before_the_upstream(auth_relay: RunningServer, fake: FakeUpstream) -> None:
    with httpx.Client(base_url=auth_relay.root_url, timeout=30.0) as http:
        created = http.post("/admin/keys", json={"name": "victim"}, headers={"authorization": f"Bearer {ADMIN}"})
        assert created.status_code == 200, created.text
        key_id = created.json()["id"]
        body = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}
        for i in range(MAX_FAILED):
            r = http.post("/v1/chat/completions", json=body, headers={"authorization": f"Bearer tr-{key_id}-wrong{i:020d}"})
            assert r.status_code == 401
        r = http.post("/v1/chat/completions", json=body, headers={"authorization": f"Bearer tr-{key_id}-wrong-again"})
        assert r.status_code == 429 and r.headers.get("retry-after")
    assert fake.chat_requests == []


def test_successes_leave_no_trace(auth_relay: RunningServer) -> None:
    with httpx.Client(base_url=auth_relay.root_url, timeout=30.0, headers={"authorization": f"Bearer {ADMIN}"}) as http:
        for _ in range(3 * MAX_FAILED):
            assert http.get("/v1/models").status_code == 200
            assert http.get("/admin/keys").status_code == 200
    assert auth_relay.services.gate.auth_failures._entries == {}


def test_tracked_addresses_are_bounded() -> None:
    now = [0.0]
    throttle = FailedAuthThrottle(max_failures=3, window_seconds=60, address_of=lambda scope: scope["client"][0], max_tracked=100, clock=lambda: now[0])
    for i in range(10_000):
        throttle.failed({"client": (f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", 1)})
        now[0] += 0.001
    assert len(throttle._entries) <= 100
    # IPv6 addresses count per /64: rotating the interface id does not help.
    for i in range(3):
        throttle.failed({"client": (f"2001:db8:1:2::{i + 1:x}", 1)})
    assert throttle.refusal({"client": ("2001:db8:1:2::ffff", 1)}) is not None
    assert throttle.refusal({"client": ("2001:db8:1:3::1", 1)}) is None


def test_ready_shows_no_paths_while_auth_is_off(relay_factory: Any) -> None:
    # The zero-config server (auth off): a summary for health checks, no host details.
    relay = relay_factory()
    body = httpx.get(relay.url("/ready"), timeout=30.0).json()
    assert {u["name"] for u in body["upstreams"]} == {"fake", "slow", "dead"}
    assert all(set(u) == {"name", "ok", "status"} for u in body["upstreams"]), body
    assert set(body.get("sandbox") or {}) <= {"backend", "available"}, body
    text = orjson.dumps(body).decode()
    for leak in ("127.0.0.1", "model_path", "python_version", "limits", "uids", "/"):
        assert leak not in text, text
