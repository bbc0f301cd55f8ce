"""Start-up latency of one sandboxed run (``print(1)``), end to end.

Usage: python bench/sandbox_startup.py [--backend auto|bwrap|landlock] [--runs 20]

Selects the backend the way the server does (self-test included), then times
``sandbox.run("print(1)")`` from the caller's side: spawn, sandbox set-up,
interpreter start, exit, reaping. Runs are sequential. Target: median under
40 ms on the 2-core reference VM.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from toolrelay.tools.sandbox import SandboxSettings, select_sandbox


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="auto", choices=["auto", "bwrap", "landlock"])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()

    sandbox = await select_sandbox(SandboxSettings(backend=args.backend))
    if not sandbox.available:
        print(f"backend: off ({sandbox.status().get('reason')})")
        return 1
    await sandbox.run("print(1)")  # warm the page cache
    times = []
    for _ in range(args.runs):
        started = time.perf_counter()
        result = await sandbox.run("print(1)")
        times.append((time.perf_counter() - started) * 1000)
        if result.stdout != "1\n":
            print(f"unexpected result: {result}")
            return 1
    times.sort()
    p90 = times[min(len(times) - 1, round(0.9 * len(times)) - 1)]
    print(f"backend: {sandbox.backend_name} (self-test {sandbox.status().get('self_test_ms')} ms)")
    print(f"runs: {len(times)}  median: {statistics.median(times):.1f} ms  p90: {p90:.1f} ms  min: {times[0]:.1f} ms  max: {times[-1]:.1f} ms")
    await sandbox.aclose()
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
