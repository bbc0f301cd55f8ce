"""The admin API of a relay (``/admin/keys``, ``/admin/usage``) over httpx with the admin key."""

from __future__ import annotations

import time
from typing import Any, Self

import httpx

from fakes.server import RunningServer

__all__ = ["ADMIN_KEY", "Admin"]

#: The ``[auth] admin_key`` of the relays the suites start with auth on.
ADMIN_KEY = "test-admin-key-0123456789abcdef"


class Admin:
    """Creates and revokes API keys and reads the ledger of one relay.

    ``http`` is the underlying client (base URL = the relay's root, admin key
    sent) for the calls this class does not wrap.
    """

    def __init__(self, relay: RunningServer, admin_key: str = ADMIN_KEY) -> None:
        self.relay = relay
        self.http = httpx.Client(
            base_url=relay.root_url,
            timeout=30.0,
            headers={"authorization": f"Bearer {admin_key}"},
        )

    def create_key(self, name: str = "test", **spec: Any) -> tuple[str, str]:
        """Create a key (``models=[...]``, ``rpm=...``, ... as the admin API takes them); returns (key id, full key)."""
        response = self.http.post("/admin/keys", json={"name": name, **spec})
        assert response.status_code == 200, response.text
        body = response.json()
        return body["id"], body["value"]

    def revoke(self, key_id: str) -> dict[str, Any]:
        response = self.http.delete(f"/admin/keys/{key_id}")
        assert response.status_code == 200, response.text
        return response.json()

    def usage_rows(self, key_id: str, *, count: int | None = None, timeout: float = 10.0) -> list[dict[str, Any]]:
        """The key's ledger rows; with ``count``, poll until that many exist (a stream books at its end, the ledger flushes in batches)."""
        deadline = time.monotonic() + timeout
        while True:
            response = self.http.get("/admin/usage", params={"group_by": "request", "key_id": key_id})
            assert response.status_code == 200, response.text
            rows = response.json()["data"]
            if count is None or len(rows) >= count or time.monotonic() > deadline:
                return rows
            time.sleep(0.05)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
