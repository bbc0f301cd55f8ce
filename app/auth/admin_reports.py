"""``/admin/requests`` and ``/admin/usage/latency``: the ledger's recent rows and latency percentiles;
``/admin/usage/metrics``: the same server's Prometheus counts as JSON, for when the ledger is off.

What the web console's usage page draws beside ``/admin/usage`` (whose ``group_by=day,key`` and
``day,model`` give the per-day series). Same guard and shapes as the rest of ``/admin``: the
admin key only, ``{"object": "list", "data": [...]}`` answers, declared query parameters.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated, Any

import anyio
import orjson
from litestar import Router, get
from litestar.params import QueryParameter
from litestar.response import Response

from toolrelay.app.auth import keyspec
from toolrelay.app.auth.admin import admin_guard, parse_time
from toolrelay.app.auth.durations import iso
from toolrelay.app.auth.gate import ADMIN_KEY_ID
from toolrelay.app.errors import OpenAIError, invalid_request

if TYPE_CHECKING:
    from toolrelay.app.auth.gate import AuthGate
    from toolrelay.app.auth.ledger import Ledger
    from toolrelay.app.metrics import Metrics

__all__ = ["build_report_handlers"]

_MAX_RECENT = 1000
_WHEN = "{edge} this time: Unix seconds, an ISO date or date-time, or a duration back from now (`24h`, `7d`)."
_OUTCOMES = {"ok": False, "error": True}


def _json(body: Any) -> Response[bytes]:
    return Response(content=orjson.dumps(body), media_type="application/json")


def _key_filter(key_id: str | None) -> str | None:
    if not key_id:
        return None
    only = keyspec.normalize_id(key_id) or (key_id if key_id == ADMIN_KEY_ID else None)
    if only is None:
        raise invalid_request("'key_id' is not a key id.", param="key_id", code="invalid_value")
    return only


def build_report_handlers(gate: AuthGate, metrics: Metrics | None = None) -> list[Any]:
    keys = gate.keys

    def ledger() -> Ledger:
        if gate.ledger is None:
            raise OpenAIError(404, "The usage ledger is off (auth.ledger = false).", type="invalid_request_error", code="ledger_disabled")
        return gate.ledger

    @get("/requests", summary="Recent requests from the usage ledger")
    async def recent_requests(
        limit: Annotated[int, QueryParameter(ge=1, le=_MAX_RECENT, description="At most this many rows, newest first.")] = 100,
        key_id: Annotated[str | None, QueryParameter(description="Only this key's requests (`admin` for the admin key's).")] = None,
        model: Annotated[str | None, QueryParameter(description="Only requests for this model id (`agent/<m>` for agent runs).")] = None,
        mode: Annotated[str | None, QueryParameter(description="Only this mode (`proxy`, `agent`, `memory`, ...).")] = None,
        outcome: Annotated[str | None, QueryParameter(description="`ok` (status below 400) or `error` (400 and above).")] = None,
        since: Annotated[str | None, QueryParameter(description=_WHEN.format(edge="From"))] = None,
        until: Annotated[str | None, QueryParameter(description=_WHEN.format(edge="Up to"))] = None,
    ) -> Response[bytes]:
        book = ledger()
        now = time.time()
        since_ts = parse_time(since, now=now, param="since")
        until_ts = parse_time(until, now=now, param="until")
        only_key = _key_filter(key_id)
        if outcome is not None and outcome not in _OUTCOMES:
            raise invalid_request("'outcome' must be `ok` or `error`.", param="outcome", code="invalid_value")
        failed = _OUTCOMES.get(outcome) if outcome else None
        # Read-your-writes: rows still queued for the writer thread go in first.
        await anyio.to_thread.run_sync(book.flush)
        rows = await anyio.to_thread.run_sync(
            lambda: book.rows(since=since_ts, until=until_ts, key_id=only_key, limit=limit + 1, model=model or None, mode=mode or None, failed=failed)
        )
        rows.reverse()  # newest first
        has_more = len(rows) > limit
        names = {k.id: k.name for k in keys.all()}
        data = rows[:limit]
        for row in data:
            row["key_name"] = names.get(row["key_id"]) if row["key_id"] else None
        return _json({"object": "list", "data": data, "has_more": has_more})

    @get("/usage/latency", summary="Latency percentiles from the usage ledger")
    async def latency(
        group_by: Annotated[
            str | None, QueryParameter(description="One of key, model, mode, upstream, status, day, hour; absent: one row for every request.")
        ] = None,
        key_id: Annotated[str | None, QueryParameter(description="Only this key's requests (`admin` for the admin key's).")] = None,
        since: Annotated[str | None, QueryParameter(description=_WHEN.format(edge="From"))] = None,
        until: Annotated[str | None, QueryParameter(description=_WHEN.format(edge="Up to"))] = None,
    ) -> Response[bytes]:
        book = ledger()
        now = time.time()
        since_ts = parse_time(since, now=now, param="since")
        until_ts = parse_time(until, now=now, param="until")
        only_key = _key_filter(key_id)
        await anyio.to_thread.run_sync(book.flush)
        try:
            data = await anyio.to_thread.run_sync(lambda: book.latency_percentiles(since=since_ts, until=until_ts, key_id=only_key, group_by=group_by or None))
        except ValueError as exc:
            raise invalid_request(str(exc), param="group_by", code="invalid_value") from None
        return _json({"object": "list", "data": data, "since": iso(since_ts), "until": iso(until_ts), "group_by": group_by or None})

    @get("/usage/metrics", summary="Request, token and latency totals from this server's metrics, since it started")
    async def metric_totals() -> Response[bytes]:
        # Works with the ledger off (auth.ledger = false): the in-memory counters /metrics renders, summed over workers.
        if metrics is None:
            raise OpenAIError(404, "This server keeps no metrics.", type="invalid_request_error", code="metrics_disabled")
        totals = await metrics.usage_totals()
        return _json({"object": "usage.metrics", **totals, "since": iso(totals["since"]), "ledger": gate.ledger is not None})

    handlers = [recent_requests, latency, metric_totals]
    return [Router("/admin", route_handlers=handlers, guards=[admin_guard(gate)], tags=["admin"])]
