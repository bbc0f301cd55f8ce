"""`toolrelay serve` takes the client's address from the connection, never from a header it was not told to trust.

uvicorn, left to itself, rewrites the client address from ``X-Forwarded-For``
for any loopback peer: a client on the host (or behind a local proxy that
passes the header on) could then name a new address on every guess and
never meet the failed-authentication throttle. With
``limits.trust_forwarded_for`` off (the default) every guess below comes from
127.0.0.1, whatever the header says.
"""

from __future__ import annotations

from pathlib import Path

import httpx
from operations.serve_process import ServeProcess

from fakes.upstream import FakeUpstream

ADMIN_KEY = "sk-admin-" + "f" * 32


def test_forwarded_for_does_not_dodge_the_failed_auth_throttle(tmp_path: Path, fake_upstream: FakeUpstream) -> None:
    auth = {"admin_key": ADMIN_KEY, "max_failed_auth": 3, "failed_auth_window_seconds": 30}
    with ServeProcess(tmp_path, fake_upstream.base_url, auth=auth).wait_ready() as relay, httpx.Client(base_url=relay.root_url, timeout=30) as http:
        statuses = []
        for i in range(5):
            headers = {"authorization": f"Bearer sk-guess-{i:024d}", "x-forwarded-for": f"203.0.113.{i + 1}"}
            response = http.get("/v1/models", headers=headers)
            statuses.append(response.status_code)
            assert "server" not in response.headers, response.headers  # nothing says what runs here
        assert statuses == [401, 401, 401, 429, 429], statuses
        # The throttle holds for the address itself, the right key included.
        assert http.get("/admin/keys", headers={"authorization": f"Bearer {ADMIN_KEY}"}).status_code == 429
