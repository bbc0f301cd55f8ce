"""The usage ledger: one row per chat request in ``<data_dir>/usage.db``.

The request path only appends to an in-memory deque (no lock, no thread
wake-up, no SQLite). A daemon thread writes batches in one transaction every
``flush_seconds``; :meth:`Ledger.close` writes everything left, so a clean
shutdown loses nothing.

A row holds the request's ``RequestInfo`` and reads its status and error
code when it is written. The gate's ``release`` runs once the status was sent
(the outer ASGI layer calls it), so both are final by the time a row is queued.

Robustness (issue 10, item 4: one row with a lone surrogate in ``model``
killed the writer, and nothing was booked again until restart):

- every value is made storable before it is written (:func:`clean_row`: lone
  surrogates become U+FFFD, strings are truncated, NaN and infinities become
  NULL, integers are clamped to SQLite's 64 bits);
- a batch that still fails is retried row by row; a row SQLite refuses is
  logged and dropped (``dropped_bad``), the others are written; a database
  that is busy or full (``OperationalError``) keeps its rows for the next
  round;
- the writer loop survives any exception, and a writer thread that died
  anyway is restarted by the next ``record``/``flush`` (``restarts``);
- the queue is bounded (``max_queued_rows``): when the writer falls that far
  behind, the oldest unwritten rows are dropped, counted (``dropped_overflow``)
  and logged at most every 10 s. Budgets are re-read from the ledger at
  start-up, so a dropped row is spend a restart forgets; the cap only bounds
  memory while the disk is stalled.
"""

from __future__ import annotations

import logging
import math
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

from toolrelay.app.sqlite import connect, migrate, script_step

log = logging.getLogger("toolrelay.ledger")

SCHEMA = """
CREATE TABLE IF NOT EXISTS usage (
    id                INTEGER PRIMARY KEY,
    ts                REAL NOT NULL,
    request_id        TEXT NOT NULL,
    key_id            TEXT,
    model             TEXT,
    mode              TEXT,
    upstream          TEXT,
    prompt_tokens     INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    cost_nano         INTEGER NOT NULL DEFAULT 0,
    latency_ms        REAL,
    status            INTEGER,
    error_code        TEXT,
    estimated         INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS usage_ts ON usage (ts);
CREATE INDEX IF NOT EXISTS usage_key_ts ON usage (key_id, ts);
"""
# ``PRAGMA user_version`` steps; the first is the schema from before versions
# (``IF NOT EXISTS``), so a usage.db of an older release opens as it is.
MIGRATIONS = (
    script_step(SCHEMA),
    # 1 for an answer replayed from the response cache (app/cache/): booked at no cost.
    script_step("ALTER TABLE usage ADD COLUMN cache_hit INTEGER NOT NULL DEFAULT 0;"),
)

_INSERT = (
    "INSERT INTO usage (ts, request_id, key_id, model, mode, upstream, prompt_tokens, completion_tokens, "
    "cost_nano, latency_ms, status, error_code, estimated, cache_hit) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)
# A whole batch in one statement: executemany steps once per row, and every
# step releases and re-takes the GIL, which under load cost the request path
# far more than the inserts themselves (measured: 0.07 ms of CPU per request).
_INSERT_BATCH = (
    "INSERT INTO usage (ts, request_id, key_id, model, mode, upstream, prompt_tokens, completion_tokens, "
    "cost_nano, latency_ms, status, error_code, estimated, cache_hit) "
    "SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, value->>6, value->>7, "
    "value->>8, value->>9, value->>10, value->>11, value->>12, value->>13 FROM json_each(?)"
)

# group_by names -> SQL expressions (a whitelist: these go into the query text).
GROUPS = {
    "key": "key_id",
    "model": "model",
    "mode": "mode",
    "upstream": "upstream",
    "status": "status",
    "day": "date(ts, 'unixepoch')",
    "hour": "strftime('%Y-%m-%dT%H:00', ts, 'unixepoch')",
}
ROW_FIELDS = (
    "ts",
    "request_id",
    "key_id",
    "model",
    "mode",
    "upstream",
    "prompt_tokens",
    "completion_tokens",
    "cost_nano",
    "latency_ms",
    "status",
    "error_code",
    "estimated",
    "cache_hit",
)

# Longest text kept in a ledger column: ids and model names are short; a
# client-chosen model string of megabytes must not become a megabyte row.
MAX_TEXT_CHARS = 256
_INT64 = (-(2**63), 2**63 - 1)
# Rows queued while the writer is behind (disk stalled, database locked).
# A row is about 0.5 KB with its RequestInfo, so the default bounds the
# backlog near 50 MB: hours of traffic at realistic rates.
DEFAULT_MAX_QUEUED_ROWS = 100_000
_DROP_LOG_INTERVAL = 10.0
# Right after the writer died: wait before running again, so a fault that
# repeats does not spin a core.
_RESTART_PAUSE = 0.5
# Rounds in a row the loop may fail on the same rows before they are dropped.
_MAX_FAILED_ROUNDS = 3


def clean_value(value: Any) -> Any:
    """``value`` as something SQLite and JSON both accept (NULL when nothing sensible)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return min(max(value, _INT64[0]), _INT64[1])
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if not isinstance(value, str):
        try:
            value = str(value)
        except Exception:  # noqa: BLE001 - an object whose __str__ raises
            return None
    value = value[:MAX_TEXT_CHARS]
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: SQLite and orjson refuse them
        value = "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in value)
    return value


def clean_row(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """A row every column of which can be stored; NOT NULL numbers default to 0."""
    out = [clean_value(v) for v in row]
    for i in _NOT_NULL_NUMBERS:
        if not isinstance(out[i], (int, float)):
            out[i] = 0
    if not isinstance(out[0], (int, float)) or not out[0]:
        out[0] = time.time()  # ts
    if not isinstance(out[1], str) or not out[1]:
        out[1] = "unknown"  # request_id
    return tuple(out)


# Columns of ROW_FIELDS that are NOT NULL numbers.
_NOT_NULL_NUMBERS = (6, 7, 8, 12, 13)


class _Pending:
    """A row waiting for the writer; ``info`` is the request's :class:`app.middleware.RequestInfo`."""

    __slots__ = ("cache_hit", "estimated", "info", "values")

    def __init__(self, info: Any, values: tuple[Any, ...], estimated: bool, cache_hit: bool = False) -> None:
        self.info = info
        self.values = values
        self.estimated = estimated
        self.cache_hit = cache_hit

    def row(self) -> tuple[Any, ...]:
        info = self.info
        status = getattr(info, "status", None)
        return clean_row((*self.values, status or None, getattr(info, "error_code", None), int(self.estimated), int(self.cache_hit)))


class Ledger:
    def __init__(
        self,
        path: Path,
        *,
        flush_seconds: float = 0.25,
        max_queued_rows: int = DEFAULT_MAX_QUEUED_ROWS,
    ) -> None:
        self.path = Path(path)
        self.flush_seconds = max(0.01, flush_seconds)
        self.max_queued_rows = max(1, int(max_queued_rows))
        # A deque, not a queue.Queue: appending never wakes the writer (a
        # futex wake plus a GIL hand-over per request cost more than
        # everything else the gate does); the writer polls every flush_seconds.
        # maxlen makes a full deque drop its oldest row on append (counted in record).
        self._rows: deque[_Pending] = deque(maxlen=self.max_queued_rows)
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._waiters: list[threading.Event] = []
        self._stop = False
        self._started = False
        self._thread: threading.Thread | None = None
        # Rows the writer took from the queue but has not written yet; kept
        # here (not in the thread's frame) so a restarted writer finds them.
        self._pending: list[_Pending] = []
        self.written = 0
        self.dropped_bad = 0  # rows SQLite refused even after cleaning
        self.dropped_overflow = 0  # rows dropped because the queue was full
        self.restarts = 0  # writer threads restarted after dying
        self._failures = 0  # consecutive failed rounds of the writer loop
        self._drop_logged = 0.0
        self._prepare()

    def _prepare(self) -> None:
        """Create or migrate the table (a subclass: its own database)."""
        conn = connect(self.path)
        try:
            migrate(conn, MIGRATIONS, name=str(self.path))
        finally:
            conn.close()

    # -- writing -------------------------------------------------------

    def start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._stop = False
                self._started = True
                self._spawn()

    def _spawn(self) -> None:
        self._thread = threading.Thread(target=self._supervised, name="toolrelay-ledger", daemon=True)
        self._thread.start()

    def _ensure_writer(self) -> None:
        """Restart the writer if it died (it should not: its loop catches everything)."""
        thread = self._thread
        if thread is None or thread.is_alive() or self._stop or not self._started:
            return
        with self._lock:
            if self._thread is thread and not thread.is_alive() and not self._stop:
                self.restarts += 1
                log.error("usage ledger writer had stopped; restarting it (restart %d)", self.restarts)
                self._spawn()

    def record(
        self,
        info: Any,
        *,
        ts: float,
        key_id: str | None,
        model: str | None,
        mode: str | None,
        upstream: str | None,
        prompt_tokens: int,
        completion_tokens: int,
        cost_nano: int,
        latency_ms: float,
        estimated: bool,
        cache_hit: bool = False,
    ) -> None:
        try:
            latency = round(latency_ms, 3)
        except (TypeError, ValueError, OverflowError):
            latency = None
        values = (ts, info.request_id, key_id, model, mode, upstream, prompt_tokens, completion_tokens, cost_nano, latency)
        rows = self._rows
        if len(rows) >= self.max_queued_rows:
            self._overflowed()
        rows.append(_Pending(info, values, estimated, cache_hit))
        if len(rows) >= 1024:  # the writer is behind: make sure there is one
            self._ensure_writer()

    def _overflowed(self) -> None:
        self.dropped_overflow += 1
        now = time.monotonic()
        if now - self._drop_logged > _DROP_LOG_INTERVAL:
            self._drop_logged = now
            log.error(
                "usage ledger queue is full (%d rows waiting): dropping the oldest; %d rows dropped so far",
                self.max_queued_rows,
                self.dropped_overflow,
            )

    def flush(self, timeout: float = 5.0) -> bool:
        """Block until every row recorded before this call is written (admin reads, tests)."""
        self._ensure_writer()
        if self._thread is None or not self._thread.is_alive():
            return False
        done = threading.Event()
        with self._lock:
            self._waiters.append(done)
        self._wake.set()
        return done.wait(timeout)

    def close(self, timeout: float = 10.0) -> None:
        self._ensure_writer()
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop = True
        self._wake.set()
        thread.join(timeout)
        if thread.is_alive():
            log.error("usage ledger writer did not finish within %.0f s; some rows may be lost", timeout)

    def _supervised(self) -> None:
        """The writer thread: runs the loop until a clean stop, whatever it raises."""
        while True:
            try:
                self._run()
                return
            except Exception:  # the ledger must outlive any row or fault
                log.exception("usage ledger writer failed; continuing")
                self.restarts += 1
                self._failures += 1
                if self._failures >= _MAX_FAILED_ROUNDS and self._pending:
                    # The same rows keep failing the loop: give them up rather than spin.
                    self.dropped_bad += len(self._pending)
                    log.error("usage ledger: dropped %d rows after %d failed rounds", len(self._pending), self._failures)
                    self._pending.clear()
                    self._failures = 0
                if self._stop:
                    try:
                        self._run()  # one last pass to write what is left
                    except Exception:
                        log.exception("usage ledger could not write its last rows")
                    return
                time.sleep(_RESTART_PAUSE)

    def _open_writer(self) -> Any:
        """The writer thread's connection for its lifetime (SQLite); a subclass may borrow one per batch instead."""
        return connect(self.path)

    def _run(self) -> None:
        conn = self._open_writer()
        pending = self._pending
        rows = self._rows
        try:
            while True:
                self._wake.wait(self.flush_seconds)
                self._wake.clear()
                with self._lock:
                    waiters, self._waiters = self._waiters, []
                stopping = self._stop
                while rows:
                    pending.append(rows.popleft())
                if len(pending) > self.max_queued_rows:  # writes kept failing: bound the backlog here too
                    excess = len(pending) - self.max_queued_rows
                    del pending[:excess]
                    for _ in range(excess):
                        self._overflowed()
                split = len(pending)
                if split:
                    # Taken off ``pending`` only once written: if the loop fails
                    # here, the restarted loop finds them again.
                    retry = self._write(conn, pending[:split])
                    pending[:split] = retry  # rows to try again (database busy)
                    self._failures = 0
                for waiter in waiters:
                    waiter.set()
                if stopping:
                    while rows:  # anything recorded while we wrote
                        pending.append(rows.popleft())
                    if pending:
                        left = self._write(conn, pending[:])
                        pending.clear()
                        if left:
                            log.error("usage ledger: %d rows could not be written at shutdown", len(left))
                    return
        finally:
            if conn is not None:
                conn.close()

    def _write(self, conn: sqlite3.Connection, rows: list[_Pending]) -> list[_Pending]:
        """Write ``rows``; return the ones to retry later (the database was busy or full)."""
        try:
            payload = orjson.dumps([p.row() for p in rows]).decode()
            with conn:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute(_INSERT_BATCH, (payload,))
            self.written += len(rows)
            return []
        except Exception as exc:  # noqa: BLE001 - find the bad row below
            log.warning("usage ledger batch of %d rows failed (%s: %s); writing them one by one", len(rows), type(exc).__name__, exc)
        retry: list[_Pending] = []
        for pending in rows:
            try:
                row = pending.row()
                with conn:
                    conn.execute("BEGIN IMMEDIATE")
                    conn.execute(_INSERT, row)
                self.written += 1
            except sqlite3.OperationalError as exc:  # locked, busy, disk full: not this row's fault
                log.warning("usage ledger: could not write a row (%s); will retry", exc)
                retry.append(pending)
            except Exception as exc:  # noqa: BLE001 - this row is bad: drop it, keep the rest
                self.dropped_bad += 1
                log.error(
                    "usage ledger: dropped an unwritable row for request %r (%s: %s); %d dropped so far",
                    clean_value(getattr(pending.info, "request_id", None)),
                    type(exc).__name__,
                    clean_value(str(exc)),
                    self.dropped_bad,
                )
        return retry

    # -- reading (any thread; a connection per call) --------------------

    def summary(
        self, *, since: float | None = None, until: float | None = None, group_by: Iterable[str] = ("key", "model"), key_id: str | None = None
    ) -> list[dict[str, Any]]:
        groups = [g for g in group_by]
        known = self._groups
        unknown = [g for g in groups if g not in known]
        if unknown:
            raise ValueError(f"unknown group_by {', '.join(unknown)}; use any of {', '.join(known)}")
        where, params = _where(since, until, key_id, self._mark)
        columns = [known[g] for g in groups] + [
            "COUNT(*)",
            "SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END)",
            "SUM(prompt_tokens)",
            "SUM(completion_tokens)",
            "SUM(cost_nano)",
            "AVG(latency_ms)",
        ]
        sql = f"SELECT {', '.join(columns)} FROM usage {where}"
        if groups:
            sql += f" GROUP BY {', '.join(known[g] for g in groups)}"
        sql += " ORDER BY SUM(cost_nano) DESC, COUNT(*) DESC"
        out = []
        for row in self._query(sql, params):
            item = dict(zip(groups, row[: len(groups)], strict=True))
            requests, errors, prompt, completion, cost, latency = row[len(groups) :]
            if not requests:
                continue
            item.update(
                requests=int(requests),
                errors=int(errors or 0),
                prompt_tokens=int(prompt or 0),
                completion_tokens=int(completion or 0),
                total_tokens=int((prompt or 0) + (completion or 0)),
                cost_usd=round(int(cost or 0) / 1e9, 9),
                avg_latency_ms=round(float(latency), 1) if latency is not None else None,
            )
            out.append(item)
        return out

    def rows(
        self,
        *,
        since: float | None = None,
        until: float | None = None,
        key_id: str | None = None,
        limit: int = 1000,
        model: str | None = None,
        mode: str | None = None,
        failed: bool | None = None,
    ) -> list[dict[str, Any]]:
        """The newest ``limit`` rows (oldest first); ``failed`` keeps only status >= 400 (True) or < 400 (False)."""
        where, params = _where(since, until, key_id, self._mark, model=model, mode=mode, failed=failed)
        fields = self._row_fields
        sql = f"SELECT {', '.join(fields)} FROM usage {where} ORDER BY id DESC LIMIT {self._mark}"
        out = []
        for row in self._query(sql, (*params, int(limit))):
            item: dict[str, Any] = dict(zip(fields, row, strict=True))
            item["cost_usd"] = item.pop("cost_nano") / 1e9
            item["estimated"] = bool(item["estimated"])
            item["cache_hit"] = bool(item["cache_hit"])
            out.append(item)
        out.reverse()
        return out

    def latency_percentiles(
        self,
        *,
        since: float | None = None,
        until: float | None = None,
        key_id: str | None = None,
        group_by: str | None = None,
        percentiles: tuple[int, ...] = (50, 90, 99),
        max_rows: int = 200_000,
    ) -> list[dict[str, Any]]:
        """Latency percentiles (nearest rank, ms) per ``group_by`` (one of :data:`GROUPS`, or None for all rows).

        Computed here from the sorted latencies rather than in SQL: SQLite has no percentile function
        and PostgreSQL's ``percentile_disc`` is not in SQLite, so one query serves both. The newest
        ``max_rows`` rows are read at most (a report over a long window, not a scan of the table).
        """
        known = self._groups
        if group_by is not None and group_by not in known:
            raise ValueError(f"unknown group_by {group_by}; use one of {', '.join(known)}")
        where, params = _where(since, until, key_id, self._mark)
        where = f"{where} AND latency_ms IS NOT NULL" if where else "WHERE latency_ms IS NOT NULL"
        group = known[group_by] if group_by is not None else "''"
        sql = f"SELECT {group}, latency_ms FROM usage {where} ORDER BY id DESC LIMIT {self._mark}"
        grouped: dict[Any, list[float]] = {}
        for name, latency in self._query(sql, (*params, int(max_rows))):
            grouped.setdefault(name, []).append(float(latency))
        out = []
        for name, values in sorted(grouped.items(), key=lambda item: str(item[0])):
            values.sort()
            item: dict[str, Any] = {group_by: name} if group_by is not None else {}
            item["requests"] = len(values)
            for p in percentiles:
                item[f"p{p}_ms"] = round(values[max(0, -(-len(values) * p // 100) - 1)], 1)
            item["max_ms"] = round(values[-1], 1)
            out.append(item)
        return out

    def spent_nano(self, key_id: str, since: float) -> int:
        mark = self._mark
        rows = self._query(f"SELECT COALESCE(SUM(cost_nano), 0) FROM usage WHERE key_id = {mark} AND ts >= {mark}", (key_id, since))
        return int(rows[0][0])

    # What the reading queries differ in between databases (a subclass sets its own).
    _groups: dict[str, str] = GROUPS
    _row_fields: tuple[str, ...] = ROW_FIELDS
    _mark = "?"

    def _query(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        """All rows of one read, on a connection of its own (any thread)."""
        conn = connect(self.path)
        try:
            return list(conn.execute(sql, params))
        finally:
            conn.close()


def _where(
    since: float | None,
    until: float | None,
    key_id: str | None,
    mark: str = "?",
    *,
    model: str | None = None,
    mode: str | None = None,
    failed: bool | None = None,
) -> tuple[str, tuple[Any, ...]]:
    """The WHERE clause and its parameters; ``mark`` is the driver's placeholder (SQLite ``?``, psycopg ``%s``)."""
    clauses: list[str] = []
    params: list[Any] = []
    if since is not None:
        clauses.append(f"ts >= {mark}")
        params.append(since)
    if until is not None:
        clauses.append(f"ts < {mark}")
        params.append(until)
    if key_id is not None:
        clauses.append(f"key_id = {mark}")
        params.append(key_id)
    if model is not None:
        clauses.append(f"model = {mark}")
        params.append(model)
    if mode is not None:
        clauses.append(f"mode = {mark}")
        params.append(mode)
    if failed is not None:
        clauses.append("status >= 400" if failed else "(status IS NULL OR status < 400)")
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", tuple(params)
