"""``GET /health`` (the process is alive) and ``GET /ready`` (it can serve)."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import anyio
import orjson
from litestar import Request, get
from litestar.response import Response

from toolrelay.app.auth.gate import bearer_token
from toolrelay.app.errors import OpenAIError

if TYPE_CHECKING:
    from toolrelay.app.services import Services


class ReadinessProbe:
    """The upstream probe behind /ready, shared by every caller for ``ttl`` seconds.

    Each probe is a ``GET /models`` per upstream with the operator's key, and
    /ready is anonymous: uncached, anyone could make the server call its
    upstreams as fast as they can send requests. Concurrent callers await the
    one probe in flight (single flight); a caller that goes away does not
    cancel it for the others.
    """

    def __init__(self, services: Services, ttl: float) -> None:
        self._services = services
        self._ttl = ttl
        self._cached: tuple[float, dict[str, Any]] | None = None
        self._inflight: asyncio.Task[dict[str, Any]] | None = None

    async def results(self) -> dict[str, Any]:
        cached = self._cached
        if cached is not None and time.monotonic() - cached[0] < self._ttl:
            return cached[1]
        task = self._inflight
        if task is None:
            task = self._inflight = asyncio.get_running_loop().create_task(self._probe())
        return await asyncio.shield(task)

    async def _probe(self) -> dict[str, Any]:
        try:
            results: dict[str, Any] = {}

            async def check(name: str, provider: Any) -> None:
                with anyio.move_on_after(6):
                    results[name] = await provider.health()
                    return
                results[name] = None

            async with anyio.create_task_group() as tg:
                for name, provider in self._services.router.providers.items():
                    tg.start_soon(check, name, provider)
            self._cached = (time.monotonic(), results)
            return results
        finally:
            self._inflight = None


def build_health_handlers(services: Services) -> list[Any]:
    probe = ReadinessProbe(services, services.settings.server.ready_cache_seconds)

    def admin_caller(request: Request[Any, Any, Any]) -> bool:
        admin_credential = getattr(services.gate, "admin_credential", None)
        return admin_credential is not None and bool(admin_credential(request.scope, bearer_token(request.scope)))

    @get("/health", summary="Liveness", tags=["health"])
    async def health() -> Response[bytes]:
        return Response(content=b'{"status":"ok"}', media_type="application/json")

    @get("/ready", summary="Readiness: each upstream reachable or degraded, sandbox backend (details for the admin key only)", tags=["health"])
    async def ready(request: Request[Any, Any, Any]) -> Response[bytes]:
        # Paths, upstream error texts and limits are for the admin key only.
        # Without it: the status alone while auth is on, and a summary (names,
        # reachability, the sandbox backend) while auth is off, which a local
        # health check needs and which shows nothing of the host.
        details = admin_caller(request)
        summary = not details and not getattr(services.gate, "enabled", False)
        results = await probe.results()
        upstreams = []
        for name in services.router.providers:
            health = results.get(name)
            if health is None:
                upstreams.append({"name": name, "ok": False, "status": "degraded", "detail": "health check timed out"})
            else:
                upstreams.append(
                    {
                        "name": name,
                        "kind": health.kind,
                        "ok": health.ok,
                        "status": "reachable" if health.ok else "degraded",
                        "detail": health.detail,
                        **health.extra,
                    }
                )
        any_ok = any(u["ok"] for u in upstreams)
        all_ok = all(u["ok"] for u in upstreams)
        status = "ready" if all_ok else ("degraded" if any_ok else "unavailable")
        # An MCP server that is down costs its tools only: degraded, still serving.
        mcp = (services.ready_extras().get("mcp") or {}).get("servers")
        if status == "ready" and isinstance(mcp, list) and not all(s.get("ok") for s in mcp):
            status = "degraded"
        # A deployment taken out by its breaker: its model still serves through the others.
        if status == "ready" and services.router.routing.any_open():
            status = "degraded"
        body: dict[str, Any] = {"status": status}
        database = services.database_health
        if database is not None:
            # The shared database holds the keys and the ledger: a host that cannot reach it cannot serve for long
            # (cached keys expire after key_cache_seconds), so it reads as unavailable; the URL is for the admin key.
            up, _ = await anyio.to_thread.run_sync(database.check)
            body["database"] = database.status(admin=details)
            if not up:
                status = body["status"] = "unavailable"
                any_ok = False
        if details:
            body.update(upstreams=upstreams, **services.ready_extras())
        elif summary:
            body["upstreams"] = [{"name": u["name"], "ok": u["ok"], "status": u["status"]} for u in upstreams]
            sandbox = services.ready_extras().get("sandbox")
            if isinstance(sandbox, dict):
                body["sandbox"] = {"backend": sandbox.get("backend"), "available": sandbox.get("available")}
            if isinstance(mcp, list):
                body["mcp"] = [{"name": s.get("name"), "ok": s.get("ok"), "status": s.get("status")} for s in mcp]
        return Response(content=orjson.dumps(body), media_type="application/json", status_code=200 if any_ok else 503)

    return [health, ready]


def build_metrics_handler(services: Services) -> Any:
    @get("/metrics", summary="Prometheus metrics", tags=["health"], include_in_schema=True)
    async def metrics(request: Request[Any, Any, Any]) -> Response[bytes]:
        gate = services.gate
        # Open while authentication is off; otherwise the admin key (a scraper can send it as a bearer token).
        if getattr(gate, "enabled", False) and not services.settings.server.metrics_public:
            token = bearer_token(request.scope)
            # admin_credential throttles wrong guesses per address (429 after too many).
            admin_credential = getattr(gate, "admin_credential", None)
            if not (admin_credential is not None and admin_credential(request.scope, token)):
                raise OpenAIError(401, "GET /metrics needs the admin key while authentication is on.", type="authentication_error", code="invalid_api_key")
        gauges: dict[str, float] = {}
        sandbox = services.ready_extras().get("sandbox")
        if isinstance(sandbox, dict):
            gauges["toolrelay_sandbox_running"] = float(sandbox.get("running") or 0)
            gauges["toolrelay_sandbox_available"] = 1.0 if sandbox.get("available") else 0.0
        ledger = getattr(gate, "ledger", None)
        if ledger is not None:  # rows the usage ledger lost (see app/auth/ledger.py): alert on any
            gauges["toolrelay_ledger_rows_dropped"] = float(ledger.dropped_bad + ledger.dropped_overflow)
            gauges["toolrelay_ledger_writer_restarts"] = float(ledger.restarts)
        body = await services.metrics.scrape(gauges)  # with --workers N: every worker's counts
        return Response(content=body.encode(), media_type="text/plain; version=0.0.4; charset=utf-8")

    return metrics
