"""``GET /health`` (the process is alive) and ``GET /ready`` (it can serve)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio
import orjson
from litestar import Request, get
from litestar.response import Response

from app.auth.gate import bearer_token
from app.errors import OpenAIError

if TYPE_CHECKING:
    from app.services import Services


def build_health_handlers(services: "Services") -> list[Any]:
    @get("/health", summary="Liveness", tags=["health"])
    async def health() -> Response[bytes]:
        return Response(content=b'{"status":"ok"}', media_type="application/json")

    @get("/ready", summary="Readiness: each upstream reachable or degraded, sandbox backend", tags=["health"])
    async def ready() -> Response[bytes]:
        results: dict[str, Any] = {}

        async def check(name: str, provider: Any) -> None:
            with anyio.move_on_after(6):
                results[name] = await provider.health()
                return
            results[name] = None

        async with anyio.create_task_group() as tg:
            for name, provider in services.router.providers.items():
                tg.start_soon(check, name, provider)
        upstreams = []
        for name in services.router.providers:
            health = results.get(name)
            if health is None:
                upstreams.append({"name": name, "ok": False, "status": "degraded", "detail": "health check timed out"})
            else:
                upstreams.append({"name": name, "kind": health.kind, "ok": health.ok, "status": "reachable" if health.ok else "degraded", "detail": health.detail, **health.extra})
        any_ok = any(u["ok"] for u in upstreams)
        all_ok = all(u["ok"] for u in upstreams)
        body = {
            "status": "ready" if all_ok else ("degraded" if any_ok else "unavailable"),
            "upstreams": upstreams,
            **services.ready_extras(),
        }
        return Response(content=orjson.dumps(body), media_type="application/json", status_code=200 if any_ok else 503)

    return [health, ready]


def build_metrics_handler(services: "Services") -> Any:
    @get("/metrics", summary="Prometheus metrics", tags=["health"], include_in_schema=True)
    async def metrics(request: Request[Any, Any, Any]) -> Response[bytes]:
        gate = services.gate
        # Open while authentication is off; otherwise the admin key (a scraper can send it as a bearer token).
        if getattr(gate, "enabled", False) and not services.settings.server.metrics_public:
            token = bearer_token(request.scope)
            if not (hasattr(gate, "is_admin") and gate.is_admin(token)):
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
        body = services.metrics.render(gauges)
        return Response(content=body.encode(), media_type="text/plain; version=0.0.4; charset=utf-8")

    return metrics
