"""app/postgres.py against a real PostgreSQL: pools, unreachable servers, migrations under concurrent start-up."""

from __future__ import annotations

import threading

import psycopg
import pytest

from fakes.postgres import PostgresServer
from toolrelay.app.postgres import DatabaseUnavailable, is_postgres_url, migrate, open_pool, redact_url, schema_versions

STEPS = [
    "CREATE TABLE things (id SERIAL PRIMARY KEY, name TEXT NOT NULL); CREATE INDEX things_name ON things (name);",
    "ALTER TABLE things ADD COLUMN size INTEGER NOT NULL DEFAULT 0;",
]


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://app:hunter2@db.example:5432/toolrelay", "postgresql://app:***@db.example:5432/toolrelay"),
        ("postgres://app@db/toolrelay", "postgres://app@db/toolrelay"),
        ("postgresql://u:p%40ss@[::1]/x?sslmode=require", "postgresql://u:***@[::1]/x?sslmode=require"),
    ],
)
def test_urls_are_recognised_and_redacted(url: str, shown: str) -> None:
    assert is_postgres_url(url)
    assert redact_url(url) == shown
    assert "hunter2" not in redact_url(url) and "p%40ss" not in redact_url(url)


def test_sqlite_paths_are_not_postgres() -> None:
    assert not is_postgres_url(None) and not is_postgres_url("") and not is_postgres_url("sqlite:///var/lib/x.db")


def test_an_unreachable_server_is_a_clear_error_without_the_password(postgres_server: PostgresServer) -> None:
    url = f"postgresql://nobody:topsecret@127.0.0.1:{postgres_server.port + 1}/nothing"
    with pytest.raises(DatabaseUnavailable) as caught:
        open_pool(url, connect_timeout=1.0)
    assert "topsecret" not in str(caught.value) and "127.0.0.1" in str(caught.value)


def test_migrations_apply_once_in_order_and_refuse_a_newer_database(postgres_url: str) -> None:
    pool = open_pool(postgres_url)
    with pool.connection() as conn:
        assert schema_versions(conn) == {}
        assert migrate(conn, STEPS[:1], name="things") == 0
        assert migrate(conn, STEPS, name="things") == 1
        assert migrate(conn, STEPS, name="things") == 2  # nothing left to do
        conn.execute("INSERT INTO things (name, size) VALUES ('a', 3)")
        assert schema_versions(conn) == {"things": 2}
        with pytest.raises(RuntimeError, match="newer"):
            migrate(conn, STEPS[:1], name="things")
    pool.close()


def test_hosts_starting_at_once_apply_each_step_exactly_once(postgres_url: str) -> None:
    applied: list[int] = []
    lock = threading.Lock()

    def counted(conn: psycopg.Connection) -> None:
        with lock:
            applied.append(1)
        conn.execute("CREATE TABLE once (id INTEGER)")  # a second run would fail: the table exists

    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def host() -> None:
        try:
            with psycopg.connect(postgres_url, autocommit=True) as conn:
                barrier.wait()
                migrate(conn, [counted], name="race")
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=host) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == [] and len(applied) == 1
