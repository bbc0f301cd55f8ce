"""A real PostgreSQL server (Debian's package) on a free loopback port, for the shared-storage backends.

One private cluster per test session (``initdb`` into a temporary directory,
``postgres`` on 127.0.0.1 only, trust authentication on loopback, fsync off:
the data is thrown away). PostgreSQL refuses to run as root, so when the tests
run as root the cluster belongs to the ``postgres`` system user the Debian
package creates. Each test that wants a clean slate takes a fresh database
from :meth:`PostgresServer.new_database`.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

__all__ = ["PostgresServer", "running_postgres"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _bin_dir() -> Path | None:
    """Where initdb and postgres are: on PATH, or Debian's versioned directory (newest first)."""
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    return Path(candidates[-1]).parent if candidates else None


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass(frozen=True, slots=True)
class PostgresServer:
    port: int
    user: str

    @property
    def admin_url(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """Create an empty database; its URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')  # the name is ours, not input
        return self.url(name)


@contextmanager
def running_postgres(workdir: Path, *, startup_timeout: float = 30.0) -> Iterator[PostgresServer]:
    """A fresh private cluster; stopped and removed on exit.

    Skips the test when PostgreSQL is not installed, unless ``TOOLRELAY_REQUIRE_POSTGRES``
    is set (CI installs it and must not skip silently).
    """
    bin_dir = _bin_dir()
    if bin_dir is None:
        if os.environ.get("TOOLRELAY_REQUIRE_POSTGRES"):
            pytest.fail("PostgreSQL is not installed, and CI requires the PostgreSQL tests to run")
        pytest.skip("PostgreSQL is not installed (apt-get install -y postgresql); CI installs it")
    as_root = os.geteuid() == 0
    user = "postgres" if as_root else (os.environ.get("USER") or "postgres")
    if as_root:
        # pytest's temporary directories are private to root (0700 all the way up): the cluster needs one its user can reach.
        workdir = Path(tempfile.mkdtemp(prefix="toolrelay-pg-"))
        shutil.chown(workdir, user)
    data = workdir / "pgdata"
    data.mkdir(parents=True)
    if as_root:
        shutil.chown(data, user)
    run_as = ["runuser", "-u", user, "--"] if as_root else []
    subprocess.run(
        [*run_as, str(bin_dir / "initdb"), "-D", str(data), "-U", user, "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    port = _free_port()
    proc = subprocess.Popen(
        [
            *run_as,
            str(bin_dir / "postgres"),
            "-D",
            str(data),
            "-p",
            str(port),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            f"unix_socket_directories={data}",
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "max_connections=200",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + startup_timeout
        while not _accepts(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"postgres did not start on port {port}")
            time.sleep(0.1)
        server = PostgresServer(port, user)
        # Accepting TCP precedes accepting logins by a moment.
        import psycopg

        while True:
            try:
                psycopg.connect(server.admin_url, connect_timeout=2).close()
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(data, ignore_errors=True)
        if as_root:
            shutil.rmtree(workdir, ignore_errors=True)
