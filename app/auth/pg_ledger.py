"""The usage ledger in PostgreSQL (``[database] url``): every host's rows in one table.

The request path is :class:`~toolrelay.app.auth.ledger.Ledger`'s own (a deque
append); only where the writer thread puts a batch differs. Each batch goes
in with one ``COPY`` on a pooled connection, each row carrying this process's
``host`` (``[database] host_name`` or ``<hostname>:<pid>``), so ``toolrelay
usage`` and ``/admin/usage`` sum every host and can group by host.

While the database is unreachable, a batch is kept whole for the next round
(no row-by-row retry: each would wait out the pool timeout); the backlog is
bounded by ``[database] ledger_buffer_rows``, beyond which the oldest rows
are dropped and counted. A clean shutdown writes everything left (if the
database is up); a crash loses the rows not yet written: those of the last
``ledger_flush_seconds`` (0.25 s by default), plus the backlog of an outage.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, LiteralString, cast

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from toolrelay.app.auth.ledger import DEFAULT_MAX_QUEUED_ROWS, ROW_FIELDS, Ledger, _Pending, log
from toolrelay.app.postgres import DatabaseUnavailable, migrate

__all__ = ["MIGRATIONS", "PG_GROUPS", "PgLedger"]

_SCHEMA = """
CREATE TABLE usage (
    id                BIGSERIAL PRIMARY KEY,
    ts                DOUBLE PRECISION NOT NULL,
    request_id        TEXT NOT NULL,
    key_id            TEXT,
    model             TEXT,
    mode              TEXT,
    upstream          TEXT,
    prompt_tokens     BIGINT NOT NULL DEFAULT 0,
    completion_tokens BIGINT NOT NULL DEFAULT 0,
    cost_nano         BIGINT NOT NULL DEFAULT 0,
    latency_ms        DOUBLE PRECISION,
    status            INTEGER,
    error_code        TEXT,
    estimated         INTEGER NOT NULL DEFAULT 0,
    host              TEXT
);
CREATE INDEX usage_ts ON usage (ts);
CREATE INDEX usage_key_ts ON usage (key_id, ts);
"""
# Each key's spend per UTC day and host, kept by a statement trigger on every
# insert into usage (the writer's COPY, its row-by-row retry, db copy): budget
# periods start at UTC midnight, so a period's spend is a sum over at most 31
# days per host instead of over every row of the month (what a host without
# Redis reads every second to see the other hosts' spend, app/auth/shared_spend.py).
_SPEND = """
CREATE TABLE usage_spend (
    key_id TEXT NOT NULL,
    day    BIGINT NOT NULL,
    host   TEXT NOT NULL,
    nano   BIGINT NOT NULL,
    PRIMARY KEY (key_id, day, host)
);
CREATE FUNCTION toolrelay_usage_spend() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO usage_spend (key_id, day, host, nano)
    SELECT key_id, (floor(ts / 86400) * 86400)::bigint, COALESCE(host, ''), SUM(cost_nano)
    FROM new_rows WHERE key_id IS NOT NULL AND cost_nano <> 0
    GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    ON CONFLICT (key_id, day, host) DO UPDATE SET nano = usage_spend.nano + excluded.nano;
    RETURN NULL;
END $$;
CREATE TRIGGER usage_spend AFTER INSERT ON usage REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION toolrelay_usage_spend();
INSERT INTO usage_spend (key_id, day, host, nano)
SELECT key_id, (floor(ts / 86400) * 86400)::bigint, COALESCE(host, ''), SUM(cost_nano)
FROM usage WHERE key_id IS NOT NULL AND cost_nano <> 0 GROUP BY 1, 2, 3;
"""
# 1 for an answer replayed from the response cache (app/cache/): booked at no cost.
_CACHE_HIT = "ALTER TABLE usage ADD COLUMN cache_hit INTEGER NOT NULL DEFAULT 0;"
# Versioned steps of the "ledger" schema (app/postgres.migrate).
MIGRATIONS: tuple[str, ...] = (_SCHEMA, _SPEND, _CACHE_HIT)

_FIELDS = (*ROW_FIELDS, "host")
_COPY = f"COPY usage ({', '.join(_FIELDS)}) FROM STDIN"
_INSERT = f"INSERT INTO usage ({', '.join(_FIELDS)}) VALUES ({', '.join(['%s'] * len(_FIELDS))})"  # noqa: S608 - constant column list

# group_by names -> SQL expressions (a whitelist: these go into the query text); days and hours in UTC, as with SQLite.
PG_GROUPS = {
    "key": "key_id",
    "model": "model",
    "mode": "mode",
    "upstream": "upstream",
    "status": "status",
    "host": "host",
    "day": "to_char(to_timestamp(ts) AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
    "hour": "to_char(to_timestamp(ts) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:00')",
}
_SPEND_BY_HOST = """
SELECT w.key_id,
       COALESCE(SUM(s.nano) FILTER (WHERE s.host = %s), 0),
       COALESCE(SUM(s.nano) FILTER (WHERE s.host <> %s), 0)
FROM unnest(%s::text[], %s::bigint[]) AS w(key_id, since)
JOIN usage_spend s ON s.key_id = w.key_id AND s.day >= w.since
GROUP BY w.key_id
"""
# Errors that say "the database is not there" rather than "this row is bad": keep the batch for later.
_UNREACHABLE = (DatabaseUnavailable, PoolTimeout, psycopg.OperationalError, psycopg.InterfaceError)


def _storable(value: Any) -> Any:
    # PostgreSQL text cannot hold NUL (SQLite can): the one thing clean_row leaves that it refuses.
    return value.replace("\x00", "\ufffd") if isinstance(value, str) else value


class PgLedger(Ledger):
    """:class:`Ledger` writing to and reading from PostgreSQL through the process's pool."""

    _groups = PG_GROUPS
    _row_fields = _FIELDS
    _mark = "%s"

    def __init__(
        self,
        pool: ConnectionPool[Any],
        *,
        host: str,
        flush_seconds: float = 0.25,
        max_queued_rows: int = DEFAULT_MAX_QUEUED_ROWS,
        timeout: float = 5.0,
    ) -> None:
        self._pool = pool
        self.host = host
        self._timeout = timeout
        super().__init__(Path(f"postgresql:{pool.name}"), flush_seconds=flush_seconds, max_queued_rows=max_queued_rows)

    def _prepare(self) -> None:
        with self._pool.connection(timeout=self._timeout) as conn:
            migrate(conn, MIGRATIONS, name="ledger")

    def _open_writer(self) -> Any:
        return None  # a pooled connection per batch: the writer holds none through an outage

    def _row(self, pending: _Pending) -> tuple[Any, ...]:
        return (*(_storable(v) for v in pending.row()), self.host)

    def _write(self, conn: Any, rows: list[_Pending]) -> list[_Pending]:
        """Write ``rows`` with one COPY; keep them all while the database is unreachable; drop only bad rows."""
        try:
            values = [self._row(p) for p in rows]
            with self._pool.connection(timeout=self._timeout) as db, db.transaction(), db.cursor().copy(_COPY) as copy:
                for row in values:
                    copy.write_row(row)
            self.written += len(rows)
            return []
        except _UNREACHABLE as exc:
            log.warning("usage ledger: database unavailable (%s); keeping %d rows for the next round", type(exc).__name__, len(rows))
            return rows
        except Exception as exc:  # noqa: BLE001 - find the bad row below
            log.warning("usage ledger batch of %d rows failed (%s: %s); writing them one by one", len(rows), type(exc).__name__, exc)
        retry: list[_Pending] = []
        for index, pending in enumerate(rows):
            try:
                with self._pool.connection(timeout=self._timeout) as db:
                    db.execute(_INSERT, self._row(pending))
                self.written += 1
            except _UNREACHABLE:  # gone meanwhile: this row and the rest wait for the next round
                retry.extend(rows[index:])
                break
            except Exception as exc:  # noqa: BLE001 - this row is bad: drop it, keep the rest
                self.dropped_bad += 1
                log.error("usage ledger: dropped an unwritable row (%s: %s); %d dropped so far", type(exc).__name__, exc, self.dropped_bad)
        return retry

    def spend_by_host(self, wanted: Sequence[tuple[str, int]]) -> dict[str, tuple[int, int]]:
        """For each (key id, period start): (this host's spend, every other host's) in nano-dollars, from ``usage_spend``."""
        if not wanted:
            return {}
        rows = self._query(_SPEND_BY_HOST, (self.host, self.host, [k for k, _ in wanted], [s for _, s in wanted]))
        return {str(key_id): (int(own), int(others)) for key_id, own, others in rows}

    def _query(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        with self._pool.connection(timeout=self._timeout) as conn:
            return list(conn.execute(cast("LiteralString", sql), params).fetchall())
