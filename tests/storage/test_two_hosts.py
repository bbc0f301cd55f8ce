"""Two toolrelay servers sharing one PostgreSQL database (and one Redis), over HTTP with the OpenAI SDK.

Keys made or revoked through one are effective on the other, usage sums both,
a budget spent across both is enforced once, an unreachable database is a
clear refusal at start-up and a 503 while running (with the ledger rows kept
and written when it returns), and the ``toolrelay db`` commands.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import psycopg
import pytest

from fakes.admin import ADMIN_KEY, Admin
from fakes.clients import sdk
from fakes.postgres import PostgresServer
from fakes.relays import RelayPool, auth_tree
from fakes.server import RunningServer, write_toml
from fakes.upstream import FakeUpstream, Reply
from fakes.waiting import wait_until
from toolrelay.app.cli import main as toolrelay_main

REPO = Path(__file__).resolve().parents[2]
CHAT = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}


def _database(url: str, host: str, **extra: Any) -> dict[str, Any]:
    return {"url": url, "host_name": host, "connect_timeout_seconds": 1.0, "key_cache_seconds": 30.0, **extra}


@pytest.fixture
def make_host(fake_upstream: FakeUpstream, tmp_path: Path) -> Iterator[Callable[..., RunningServer]]:
    """``make_host(name, url, **sections)``: a relay on the auth tree with ``[database]`` on ``url``, its own data directory."""
    with RelayPool(tmp_path) as pool:

        def make(name: str, url: str, *, database: dict[str, Any] | None = None, **sections: Any) -> RunningServer:
            return pool.start(auth_tree(fake_upstream, tmp_path / f"data-{name}", database=_database(url, name, **(database or {})), **sections))

        yield make


@pytest.fixture
def pair(make_host: Callable[..., RunningServer], postgres_url: str, redis_url: str, tmp_path: Path) -> tuple[RunningServer, RunningServer]:
    redis = {"url": redis_url, "prefix": "pg" + tmp_path.name[-8:]}
    return make_host("a", postgres_url, redis=redis), make_host("b", postgres_url, redis=redis)


def _chat(relay: RunningServer, key: str, **body: Any) -> httpx.Response:
    return httpx.post(relay.url("/v1/chat/completions"), json={**CHAT, **body}, headers={"authorization": f"Bearer {key}"}, timeout=30)


def test_a_key_made_on_a_works_on_b_at_once_and_its_revocation_within_a_second(pair: tuple[RunningServer, RunningServer], fake: FakeUpstream) -> None:
    a, b = pair
    with Admin(a) as admin_a:
        key_id, key = admin_a.create_key("shared")
        with sdk(b, key) as client:  # no wait: B has never seen this key
            assert client.chat.completions.create(**CHAT).choices[0].message.content
        admin_a.revoke(key_id)
    revoked_at = time.monotonic()

    def refused() -> bool:
        return _chat(b, key).status_code == 401

    wait_until(refused, timeout=1.0, what="B refusing the key revoked on A")
    assert time.monotonic() - revoked_at < 1.0
    with sdk(b, key) as client, pytest.raises(openai.AuthenticationError, match="revoked"):
        client.chat.completions.create(**CHAT)


def test_a_changed_allow_list_applies_on_the_other_host(pair: tuple[RunningServer, RunningServer], fake: FakeUpstream) -> None:
    a, b = pair
    with Admin(a) as admin_a:
        key_id, key = admin_a.create_key("narrow", models=["fake-model"])
        assert _chat(b, key).status_code == 200
        assert admin_a.http.post(f"/admin/keys/{key_id}", json={"models": ["fake-tools"]}).status_code == 200
    wait_until(lambda: _chat(b, key).status_code == 404, timeout=1.0, what="B applying A's new allow-list")


def test_usage_shows_both_hosts_requests(pair: tuple[RunningServer, RunningServer], fake: FakeUpstream, tmp_path: Path, postgres_url: str) -> None:
    a, b = pair
    with Admin(a) as admin_a:
        key_id, key = admin_a.create_key("both")
        for relay in (a, b, b):
            assert _chat(relay, key).status_code == 200
        rows = Admin(b).usage_rows(key_id, count=3)
        assert sorted(r["host"] for r in rows) == ["a", "b", "b"]
        by_host = admin_a.http.get("/admin/usage", params={"group_by": "host", "key_id": key_id}).json()["data"]
        assert {item["host"]: item["requests"] for item in by_host} == {"a": 1, "b": 2}
    # The CLI reads the same table (no data directory on this machine).
    config = write_toml(tmp_path / "cli.toml", {"database": {"url": postgres_url}, "server": {"data_dir": str(tmp_path / "nowhere")}})
    out = _run_cli(["usage", "--config", str(config), "--group-by", "host,key", "--json"])
    data = orjson.loads(out)["data"]
    assert {(item["host"], item["key_name"]): item["requests"] for item in data if item["key"] == key_id} == {("a", "both"): 1, ("b", "both"): 2}
    listing = _run_cli(["keys", "list", "--config", str(config), "--json"])
    assert key_id in listing


def test_a_budget_spent_across_both_hosts_is_enforced_once(pair: tuple[RunningServer, RunningServer], fake: FakeUpstream) -> None:
    a, b = pair
    with Admin(a) as admin_a:
        _key_id, key = admin_a.create_key("budget", budget_usd=30, budget_period="total")
    # $1 per token on fake-tools: $15 on A, then $15 on B, and the budget is gone on both.
    for relay in (a, b):
        fake.enqueue(Reply(usage={"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}))
        assert _chat(relay, key, model="fake-tools", max_tokens=5).status_code == 200
    for relay in (a, b):
        refused = _chat(relay, key)
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "insufficient_quota"


def test_without_redis_a_budget_spent_across_both_hosts_is_enforced_once(
    make_host: Callable[..., RunningServer], postgres_url: str, fake: FakeUpstream
) -> None:
    # No Redis: each host counts its own spend and reads the others' from the ledger every second.
    a, b = make_host("a", postgres_url), make_host("b", postgres_url)
    with Admin(a) as admin_a:
        _key_id, key = admin_a.create_key("budget", budget_usd=30, budget_period="monthly")
    for relay in (a, b):
        fake.enqueue(Reply(usage={"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}))
        assert _chat(relay, key, model="fake-tools", max_tokens=5).status_code == 200
    spent = time.monotonic()
    # Each host alone has seen $15 of $30; together they have spent it all. Both refuse once
    # the other's rows are flushed (0.25 s) and read (every second).
    for relay in (a, b):
        wait_until(lambda relay=relay: _chat(relay, key).status_code == 429, timeout=5.0, what=f"{relay.url('')} refusing the spent budget")
    assert time.monotonic() - spent < 4.0
    refused = _chat(b, key)
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "insufficient_quota"
    # A restarted host (a new process, the same host name) starts from the ledger: its own rows and the others'.
    c = make_host("a", postgres_url)
    assert _chat(c, key).status_code == 429


def _run_cli(argv: list[str]) -> str:
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = toolrelay_main(argv)
    assert code == 0, buffer.getvalue()
    return buffer.getvalue()


def _block(admin_url: str, database: str, allowed: bool) -> None:
    """Make ``database`` unreachable (connections refused, open ones cut) or reachable again, on a shared cluster."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS {"true" if allowed else "false"}')  # our own name
        if not allowed:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (database,))


def test_a_database_outage_is_503_and_the_ledger_catches_up(
    make_host: Callable[..., RunningServer], postgres_server: PostgresServer, postgres_url: str, fake: FakeUpstream
) -> None:
    database = postgres_url.rsplit("/", 1)[1]
    host = make_host("solo", postgres_url, database={"key_cache_seconds": 2.0, "connect_timeout_seconds": 0.5})
    with Admin(host) as admin:
        key_id, key = admin.create_key("outage")
        assert _chat(host, key).status_code == 200
        ready = admin.http.get("/ready").json()
        assert ready["database"]["status"] == "up" and "url" in ready["database"]
        _block(postgres_server.admin_url, database, allowed=False)
        try:
            # Within key_cache_seconds the mirror still authenticates: served, its ledger row kept in memory.
            assert _chat(host, key).status_code == 200
            # /ready checks the database at most every 2 s.
            wait_until(lambda: admin.http.get("/ready").status_code == 503, timeout=5.0, what="/ready seeing the outage")
            assert admin.http.get("/ready").json()["database"]["status"] == "down"
            anonymous = httpx.get(host.url("/ready"), timeout=10).json()
            assert anonymous["database"]["status"] == "down" and "url" not in anonymous["database"]

            # Past it: key-checked requests get an OpenAI-shaped 503, quickly.
            def refused() -> bool:
                return _chat(host, key).status_code == 503

            wait_until(refused, timeout=10.0, what="a 503 once the key cache is stale")
            started = time.monotonic()
            response = _chat(host, key)
            assert time.monotonic() - started < 3.0
            assert response.status_code == 503
            assert response.json()["error"]["type"] == "server_error" and response.json()["error"]["code"] == "database_unavailable"
            with sdk(host, key) as client, pytest.raises(openai.InternalServerError):
                client.with_options(max_retries=0).chat.completions.create(**CHAT)
        finally:
            _block(postgres_server.admin_url, database, allowed=True)
        wait_until(lambda: _chat(host, key).status_code == 200, timeout=10.0, what="serving again")
        rows = admin.usage_rows(key_id, count=3)
        assert [r["status"] for r in rows].count(200) >= 3  # the row booked during the outage is there


def test_start_up_is_refused_with_a_clear_message_when_the_database_is_unreachable(tmp_path: Path, postgres_server: PostgresServer) -> None:
    url = f"postgresql://toolrelay:hunter2@127.0.0.1:{postgres_server.port + 3}/toolrelay"
    config = write_toml(tmp_path / "toolrelay.toml", {"server": {"data_dir": str(tmp_path / "data")}, "database": {"url": url, "connect_timeout_seconds": 1}})
    done = subprocess.run(
        [sys.executable, "-m", "toolrelay.app", "serve", "--config", str(config)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "postgresql://toolrelay:***@127.0.0.1" in done.stderr and "refusing to start" in done.stderr
    assert "hunter2" not in done.stderr and "Traceback" not in done.stderr


def test_hosts_starting_at_the_same_moment_migrate_once(make_host: Callable[..., RunningServer], postgres_url: str) -> None:
    started: list[RunningServer] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def start(name: str) -> None:
        try:
            barrier.wait()
            started.append(make_host(name, postgres_url))
        except BaseException as exc:  # noqa: BLE001 - asserted below
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(name,)) for name in ("x", "y")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == [] and len(started) == 2
    with psycopg.connect(postgres_url) as conn:
        versions = dict(conn.execute("SELECT name, version FROM toolrelay_schema").fetchall())
    from toolrelay.app.auth import pg_keystore, pg_ledger

    assert versions["keys"] == len(pg_keystore.MIGRATIONS) and versions["ledger"] == len(pg_ledger.MIGRATIONS)


def test_db_status_and_upgrade(tmp_path: Path, postgres_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_toml(tmp_path / "db.toml", {"database": {"url": postgres_url}})
    assert toolrelay_main(["db", "status", "--config", str(config), "--json"]) == 1  # a fresh database: everything pending
    before = orjson.loads(capsys.readouterr().out)
    assert before["url"] == postgres_url and {s["schema"]: s["state"] for s in before["schemas"]}["keys"] == "pending"
    assert toolrelay_main(["db", "upgrade", "--config", str(config)]) == 0
    assert "keys" in capsys.readouterr().out
    assert toolrelay_main(["db", "status", "--config", str(config), "--json"]) == 0
    after = orjson.loads(capsys.readouterr().out)
    assert all(s["state"] == "current" and s["database"] == s["code"] >= 1 for s in after["schemas"])


def test_db_commands_without_a_database_say_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_toml(tmp_path / "none.toml", {"server": {"data_dir": str(tmp_path / "d")}})
    assert toolrelay_main(["db", "status", "--config", str(config)]) == 2
    assert "no shared database is configured" in capsys.readouterr().err


def test_the_admin_key_sees_the_redacted_url_only(make_host: Callable[..., RunningServer], postgres_server: PostgresServer) -> None:
    # A password the trust-authenticated test cluster ignores, so the URL has one to hide.
    url = postgres_server.new_database().replace(f"{postgres_server.user}@", f"{postgres_server.user}:pw-secret@")
    host = make_host("r", url)
    with Admin(host) as admin:
        shown = admin.http.get("/ready").json()["database"]
    assert shown["status"] == "up" and "pw-secret" not in shown["url"] and ":***@" in shown["url"]
    assert "url" not in httpx.get(host.url("/ready"), timeout=10).json()["database"]
    assert ADMIN_KEY not in shown["url"]
