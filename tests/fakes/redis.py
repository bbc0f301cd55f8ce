"""A real ``redis-server`` on a free loopback port, for the shared-state backends."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

__all__ = ["running_redis"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@contextmanager
def running_redis(workdir: Path, *, startup_timeout: float = 10.0) -> Iterator[str]:
    """Yield ``redis://127.0.0.1:<port>/0`` of a fresh, non-persisting server; stop it on exit.

    Skips the test when the binary is missing, unless ``TOOLRELAY_REQUIRE_REDIS``
    is set (CI installs it and must not skip silently).
    """
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("TOOLRELAY_REQUIRE_REDIS"):
            pytest.fail("redis-server is not installed, and CI requires the Redis tests to run")
        pytest.skip("redis-server is not installed (apt-get install -y redis-server); CI installs it")
    port = _free_port()
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + startup_timeout
        while not _answers_ping(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"redis-server did not start on port {port}")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
