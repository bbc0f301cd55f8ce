"""CPU cost of the keyed gate per request: authenticate + admit + release (+ the ledger writer thread).

Runs the gate in-process on realistic inputs (a client's headers, a ~200-token
chat payload, the route the router would return, the usage the tracker would
attach) and reports process CPU time per request (all threads, so the
ledger's background writes are included), against :class:`app.gate.OpenGate`
as the baseline "no keys" setup::

    python bench/auth_overhead.py            # 20000 requests per case
    python bench/auth_overhead.py -n 50000 --redis redis://127.0.0.1:6379/0

Cases: the open gate; the keyed gate with no keys (auth off, ledger on); a key
without limits; a key with RPM + TPM (tiktoken estimate of the prompt) +
parallel slot + budget on in-process counters; the same on Redis (optional:
adds two round trips, whose client-side CPU is counted).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from toolrelay.app.auth import build_gate
from toolrelay.app.config import load_settings
from toolrelay.app.gate import OpenGate
from toolrelay.app.middleware import RequestInfo
from toolrelay.app.tokens import TokenCounter
from toolrelay.app.usage import RequestUsage

PAYLOAD = {
    "model": "gpt-4o-mini",
    "messages": [
        {"role": "system", "content": "You are a careful assistant. Answer briefly and cite your sources. " * 4},
        {
            "role": "user",
            "content": "Summarise the main trade-offs between token buckets and sliding windows for API rate limiting, "
            "with attention to burst behaviour, memory use, fairness across clients and what happens across several servers. " * 3,
        },
    ],
    "max_tokens": 256,
    "temperature": 0.2,
}
HEADERS = [
    (b"host", b"127.0.0.1:8000"),
    (b"user-agent", b"OpenAI/Python 1.99.0"),
    (b"accept", b"application/json"),
    (b"content-type", b"application/json"),
    (b"x-stainless-lang", b"python"),
    (b"x-stainless-package-version", b"1.99.0"),
    (b"x-stainless-os", b"Linux"),
    (b"x-stainless-arch", b"x64"),
    (b"x-stainless-runtime", b"CPython"),
    (b"x-stainless-retry-count", b"0"),
    (b"content-length", b"812"),
]


class Provider:
    name = "openai"


class Route:
    model_id = "gpt-4o-mini"
    upstream_model = "gpt-4o-mini"
    provider = Provider()


class Request:
    def __init__(self, scope: dict[str, Any]) -> None:
        self.scope = scope


REPORT = {"prompt_tokens": 212, "completion_tokens": 87, "total_tokens": 299}


async def run_case(gate: Any, n: int, key: str | None) -> float:
    headers = list(HEADERS)
    if key:
        headers.append((b"authorization", b"Bearer " + key.encode()))
    scope = {"type": "http", "headers": headers, "client": ("127.0.0.1", 50000)}
    route = Route()
    await gate.start()
    # Warm-up: tiktoken vocabulary, caches, first SQLite pages.
    for i in range(200):
        await one(gate, scope, route, f"warm{i}")
    flush = getattr(getattr(gate, "ledger", None), "flush", None)
    if flush:
        flush()
    cpu0 = time.process_time()
    for i in range(n):
        await one(gate, scope, route, f"req_{i:012d}")
    if flush:
        flush()  # the ledger rows are part of the cost
    cpu = time.process_time() - cpu0
    await gate.close()
    return cpu / n * 1e6


async def one(gate: Any, scope: dict[str, Any], route: Route, rid: str) -> None:
    info = RequestInfo(rid)
    request = Request(scope)
    await gate.authenticate(request, info)
    info.model = "gpt-4o-mini"
    info.mode = "proxy"
    info.upstream = "openai"
    info.ticket = await gate.admit(request, info, PAYLOAD, route)
    dict(info.ticket.headers)
    info.status = 200
    # What chat.py's UsageTracker attaches when the body ends; the outer ASGI layer then releases.
    info.usage = RequestUsage.from_report(REPORT)
    await gate.release(info)


def settings_for(data: Path, redis_url: str | None, *, admin: bool = False) -> Any:
    env = {"TOOLRELAY_DATA": str(data)}
    if admin:
        env["TOOLRELAY_AUTH__ADMIN_KEY"] = "bench-admin-key-0123456789"
    if redis_url:
        env["TOOLRELAY_REDIS__URL"] = redis_url
        env["TOOLRELAY_REDIS__PREFIX"] = f"bench{time.time_ns()}"
    env["TOOLRELAY_UPSTREAMS__OPENAI__BASE_URL"] = "http://127.0.0.1:9/v1"
    env["TOOLRELAY_UPSTREAMS__OPENAI__MODELS"] = '["gpt-4o-mini"]'
    return load_settings(None, environ=env)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=20000, help="requests per case")
    parser.add_argument("--redis", help="also measure the Redis backend at this URL")
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    tokens = TokenCounter(cache_dir=Path(tempfile.gettempdir()) / "toolrelay-bench-tiktoken")
    results: dict[str, float] = {}
    results["open gate (baseline)"] = await run_case(OpenGate(), args.n, None)
    with tempfile.TemporaryDirectory() as tmp:
        gate = build_gate(settings_for(Path(tmp) / "off", None), tokens, force_auth=False)
        results["keyed gate, no keys (auth off)"] = await run_case(gate, args.n, None)

        gate = build_gate(settings_for(Path(tmp) / "plain", None), tokens, force_auth=False)
        _, key = gate.keys.create(name="plain")
        gate.keys.refresh()
        results["key, no limits"] = await run_case(gate, args.n, key)

        gate = build_gate(settings_for(Path(tmp) / "limited", None), tokens, force_auth=False)
        _, key = gate.keys.create(name="limited", models=["gpt-4o-mini", "agent/*"], rpm=10**9, tpm=10**12, max_parallel=64, budget_usd=10**9)
        gate.keys.refresh()
        results["key, rpm+tpm+parallel+budget (memory)"] = await run_case(gate, args.n, key)

        if args.redis:
            gate = build_gate(settings_for(Path(tmp) / "redis", args.redis), tokens, force_auth=False)
            _, key = gate.keys.create(name="limited", rpm=10**9, tpm=10**12, max_parallel=64, budget_usd=10**9)
            gate.keys.refresh()
            results["key, rpm+tpm+parallel+budget (redis)"] = await run_case(gate, args.n, key)

    base = results["open gate (baseline)"]
    print(f"CPU per request over {args.n} requests (process time, all threads; Python {sys.version.split()[0]}):")
    for name, us in results.items():
        extra = "" if name.startswith("open") else f"   (+{us - base:7.1f} µs over the open gate)"
        print(f"  {name:<42} {us:8.1f} µs{extra}")


if __name__ == "__main__":
    asyncio.run(main())
