#!/usr/bin/env python3
"""Proxy-mode overhead of toolrelay against a fast fake upstream, direct vs through toolrelay.

Starts ``mock_upstream.py`` (a fast OpenAI-protocol server) and a toolrelay
configured to proxy to it, then runs ``load.py compare``: for every scenario
(non-streaming and streaming, concurrency 1/16/64) it alternates runs straight
at the mock ("direct") and through toolrelay ("target"), and prints requests/s,
added latency p50/p99, added time to first token, toolrelay's CPU ms per
request and its peak RSS.

    python bench/proxy.py                       # full run (about 6 minutes)
    python bench/proxy.py --quick               # 3 s runs, 1 repetition
    python bench/proxy.py --keys                # same, with an API key, limits and the usage ledger on
    python bench/proxy.py --api responses       # clients on /v1/responses, translated to the mock's chat API
    python bench/proxy.py --deployments 2       # the model served by two mock upstreams (failover routing, weighted)

Non-streaming load uses ``wrk`` when installed (``apt-get install wrk``),
otherwise load.py's own asyncio client (which then competes for the same two
cores and lowers every figure).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, timeout: float = 60.0, headers: dict[str, str] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=2) as response:
                if response.status < 500:
                    return
        except Exception:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not come up within {timeout:.0f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 s runs, 1 repetition")
    parser.add_argument("--duration", type=float, default=None)
    parser.add_argument("--reps", type=int, default=None)
    parser.add_argument("--modes", default="nonstream,stream")
    parser.add_argument("--concurrencies", default="1,16,64")
    parser.add_argument("--keys", action="store_true", help="serve with an API key (auth, limits, ledger on)")
    parser.add_argument("--database-url", default=None, help="keys and ledger in this PostgreSQL database ([database] url; an empty or a toolrelay database)")
    parser.add_argument("--redis-url", default=None, help="limits counted in this Redis ([redis] url)")
    parser.add_argument("--no-access-log", action="store_true", help="the tuned row: access log off (the default configuration, what users run, has it on)")
    parser.add_argument(
        "--api",
        choices=["chat", "responses", "responses-nostore"],
        default="chat",
        help="what clients call on toolrelay (the direct side is always the mock's chat API)",
    )
    parser.add_argument(
        "--deployments",
        type=int,
        default=1,
        help="mock upstreams behind the one model: 1 is the plain route, 2 or more a [models] deployments list (failover routing)",
    )
    parser.add_argument("--out", help="raw results JSON (default bench/results/proxy-<time>.json)")
    args = parser.parse_args()
    duration = args.duration or (3.0 if args.quick else 10.0)
    reps = args.reps or (1 if args.quick else 3)

    work = Path(tempfile.mkdtemp(prefix="toolrelay-bench-"))
    mock_port, relay_port = free_port(), free_port()
    # The direct runs go to the first mock; with --deployments N toolrelay spreads over N of them.
    mock_ports = [mock_port, *(free_port() for _ in range(max(1, args.deployments) - 1))]
    api_key = "sk-bench"
    config = work / "toolrelay.toml"
    text = f'[server]\ndata_dir = "{work / "data"}"\n' + ("access_log = false\n" if args.no_access_log else "")
    if args.deployments <= 1:
        text += f'[upstreams.mock]\nbase_url = "http://127.0.0.1:{mock_port}/v1"\napi_key = "{api_key}"\nmodels = ["mock-model"]\n'
    else:
        for i, port in enumerate(mock_ports):
            text += f'[upstreams.mock{i}]\nbase_url = "http://127.0.0.1:{port}/v1"\napi_key = "{api_key}"\n'
        entries = ", ".join(f'{{ upstream = "mock{i}" }}' for i in range(len(mock_ports)))
        text += f'[models."mock-model"]\ndeployments = [{entries}]\n'
    if args.database_url:
        text += f'[database]\nurl = "{args.database_url}"\n'
    if args.redis_url:
        text += f'[redis]\nurl = "{args.redis_url}"\nprefix = "bench{relay_port}"\n'
    config.write_text(text)
    env = {**os.environ, "TOOLRELAY_CONFIG": str(config)}
    procs: list[subprocess.Popen[bytes]] = []

    def stop_all() -> None:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()

    try:
        mocks = [
            subprocess.Popen(
                [sys.executable, str(HERE / "mock_upstream.py"), "--port", str(port), "--tokens", "20", "--token-delay-ms", "5"],
                stdout=subprocess.DEVNULL,
            )
            for port in mock_ports
        ]
        procs.extend(mocks)
        mock = mocks[0]
        for port in mock_ports:
            wait_http(f"http://127.0.0.1:{port}/v1/models")
        if args.keys:
            created = subprocess.run(
                [sys.executable, "-m", "toolrelay.app", "keys", "create", "--name", "bench", "--rpm", "10000000", "--tpm", "10000000000", "--json"],
                env=env,
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=True,
            )
            api_key = json.loads(created.stdout)["value"]
        # Log lines go to a file, as they would to a user's log file or journald.
        log_file = (work / "toolrelay.log").open("wb")
        relay = subprocess.Popen(
            [sys.executable, "-m", "toolrelay.app", "serve", "--port", str(relay_port)], env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log_file
        )
        procs.append(relay)
        wait_http(f"http://127.0.0.1:{relay_port}/health")
        label = (
            "toolrelay"
            + ("" if args.api == "chat" else f"-{args.api}")
            + ("-keys" if args.keys else "")
            + ("-pg" if args.database_url else "")
            + ("-redis" if args.redis_url else "")
            + (f"-{args.deployments}deployments" if args.deployments > 1 else "")
        )
        out = args.out or str(HERE / "results" / f"{label.replace('toolrelay', 'proxy')}-{time.strftime('%Y%m%d-%H%M%S')}.json")
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        engine = "auto" if shutil.which("wrk") else "py"
        cmd = [
            sys.executable,
            str(HERE / "load.py"),
            "compare",
            "--direct",
            f"http://127.0.0.1:{mock_port}",
            "--target",
            f"http://127.0.0.1:{relay_port}",
            "--pid",
            str(relay.pid),
            "--mock-pid",
            str(mock.pid),
            "--modes",
            args.modes,
            "--concurrencies",
            args.concurrencies,
            "--duration",
            str(duration),
            "--reps",
            str(reps),
            "--engine",
            engine,
            "--label",
            label,
            "--target-api",
            args.api,
            "--out",
            out,
            "--api-key",
            api_key,
        ]
        print("# " + " ".join(cmd[2:]), file=sys.stderr)
        return subprocess.call(cmd, env={**os.environ, "BENCH_MODEL": "mock-model", "BENCH_API_KEY": api_key})
    finally:
        stop_all()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
