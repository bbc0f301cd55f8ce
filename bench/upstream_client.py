#!/usr/bin/env python3
"""CPU per upstream request of toolrelay's HTTP client against aiohttp's, against the fake upstream.

Both clients post the same chat request to ``bench/mock_upstream.py`` (started here
on a free port) and read the whole answer (plain) or every chunk of a
20-chunk stream, at concurrency 1, 16 and 64. The figure is this process's
CPU per request, which is the client's own cost: the fake upstream runs in
another process.

    python bench/upstream_client.py [--n 6400] [--concurrencies 1,16,64] [--modes plain,stream]

aiohttp is a test dependency (the fake upstreams use it), so install the
project with ``.[test]`` to compare; without it only our client runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import uvloop

from toolrelay.app.providers.upstream_http import UpstreamClient

HERE = os.path.dirname(os.path.abspath(__file__))
PLAIN = b'{"model":"mock-model","messages":[{"role":"user","content":"hi"}],"max_tokens":20}'
STREAM = b'{"model":"mock-model","messages":[{"role":"user","content":"hi"}],"max_tokens":20,"stream":true}'
HEADERS = {"content-type": "application/json", "authorization": "Bearer sk-bench"}

Call = Callable[[bytes], Awaitable[int]]


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _measure(call: Call, body: bytes, n: int, concurrency: int) -> tuple[float, float]:
    async def worker(count: int) -> None:
        for _ in range(count):
            if await call(body) != 200:
                raise SystemExit("the fake upstream did not answer 200")

    await asyncio.gather(*(worker(10) for _ in range(concurrency)))  # warm the pool
    started, cpu = time.perf_counter(), _cpu()
    await asyncio.gather(*(worker(n // concurrency) for _ in range(concurrency)))
    return time.perf_counter() - started, _cpu() - cpu


async def _ours(url: str, body: bytes, n: int, concurrency: int) -> tuple[float, float]:
    client = UpstreamClient(url, headers=HEADERS)

    async def call(payload: bytes) -> int:
        response = await client.request("POST", url + "/v1/chat/completions", body=payload, timeout=30.0)
        try:
            async for _ in response:
                pass
            return response.status
        finally:
            response.release()

    try:
        return await _measure(call, body, n, concurrency)
    finally:
        await client.close()


async def _aiohttp(url: str, body: bytes, n: int, concurrency: int) -> tuple[float, float]:
    import aiohttp

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256), headers=HEADERS, auto_decompress=False) as session:

        async def call(payload: bytes) -> int:
            async with session.post(url + "/v1/chat/completions", data=payload) as response:
                async for _ in response.content.iter_any():
                    pass
                return response.status

        return await _measure(call, body, n, concurrency)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=6400)
    parser.add_argument("--concurrencies", default="1,16,64")
    parser.add_argument("--modes", default="plain,stream")
    args = parser.parse_args()
    port = _free_port()
    mock = subprocess.Popen(
        [sys.executable, os.path.join(HERE, "mock_upstream.py"), "--port", str(port), "--tokens", "20", "--token-delay-ms", "5"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        clients: list[tuple[str, Callable[[str, bytes, int, int], Coroutine[Any, Any, tuple[float, float]]]]] = [("toolrelay", _ours)]
        try:
            import aiohttp  # noqa: F401

            clients.append(("aiohttp", _aiohttp))
        except ImportError:
            print("(aiohttp is not installed: only toolrelay's client runs)")
        print("| client | mode | conc | requests/s | client CPU us/request |\n|---|---|---|---|---|")
        for mode in args.modes.split(","):
            body = STREAM if mode == "stream" else PLAIN
            for concurrency in (int(c) for c in args.concurrencies.split(",")):
                # A stream takes ~100 ms however fast the client is: fewer of them at low concurrency.
                n = args.n if mode == "plain" else max(100, min(args.n // 10, concurrency * 20))
                for name, run in clients:
                    elapsed, cpu = uvloop.run(run(url, body, n, concurrency))
                    done = n // concurrency * concurrency
                    print(f"| {name} | {mode} | {concurrency} | {done / elapsed:,.0f} | {cpu / done * 1e6:.0f} |", flush=True)
    finally:
        mock.terminate()
        mock.wait(5)


if __name__ == "__main__":
    main()
