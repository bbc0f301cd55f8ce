"""Metrics summed over ``--workers N``: the worker answering a scrape asks its siblings for their counts.

Each worker listens on a Unix socket ``<pid>.sock`` in a private directory
the CLI creates (0700, ``TOOLRELAY_METRICS_DIR``) and answers a connection
with :meth:`Metrics.snapshot` as JSON. A scrape connects to every other
socket there, so one ``GET /metrics`` counts each request once, whichever
worker it reaches.

Asked for at scrape time rather than written on every request: recording a
request stays the few dict updates it was (a shared-memory or
``prometheus_client`` multiprocess counter costs a lock and an mmap write per
series per request), and a scrape costs one local round trip per worker. A
worker that exits leaves its final counts in ``retired-<pid>.json``, which
later scrapes keep adding, so counters do not go backwards when uvicorn
replaces a worker. A worker too busy to answer within the timeout is left out
of that one scrape.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path
from typing import Any

import orjson

from toolrelay.app.metrics import Metrics

__all__ = ["METRICS_DIR_ENV", "WorkerMetrics"]

log = logging.getLogger("toolrelay")

#: The environment variable naming the directory the CLI made for ``--workers N``.
METRICS_DIR_ENV = "TOOLRELAY_METRICS_DIR"
_TIMEOUT_SECONDS = 2.0
_MAX_SNAPSHOT_BYTES = 64 * 1024 * 1024


class WorkerMetrics:
    """This worker's socket in ``directory``, and the collection of its siblings' snapshots."""

    def __init__(self, directory: Path, metrics: Metrics, *, pid: int | None = None) -> None:
        self.directory = directory
        self.metrics = metrics
        self.pid = pid if pid is not None else os.getpid()
        self.socket_path = directory / f"{self.pid}.sock"
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self.socket_path.unlink(missing_ok=True)
        self._server = await asyncio.start_unix_server(self._answer, path=str(self.socket_path))
        os.chmod(self.socket_path, 0o600)
        self.metrics.siblings = self.collect

    async def close(self) -> None:
        self.metrics.siblings = None
        if self._server is not None:
            self._server.close()
            self._server = None
        self.socket_path.unlink(missing_ok=True)
        # Counters must not go backwards when a worker is replaced: its totals stay in the sums.
        retired = self.directory / f"retired-{self.pid}.json"
        snapshot = self.metrics.snapshot()
        snapshot["inflight"] = 0
        snapshot["retired"] = True
        with contextlib.suppress(OSError):
            retired.write_bytes(orjson.dumps(snapshot))

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(orjson.dumps(self.metrics.snapshot()))
            await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def collect(self) -> list[dict[str, Any]]:
        """Every sibling's snapshot (live workers over their sockets, retired ones from their files)."""
        paths = sorted(self.directory.iterdir())
        live = [p for p in paths if p.suffix == ".sock" and p != self.socket_path]
        snapshots = [s for s in await asyncio.gather(*(self._ask(p) for p in live)) if s is not None]
        for path in paths:
            if path.name.startswith("retired-") and path.suffix == ".json":
                with contextlib.suppress(OSError, orjson.JSONDecodeError):
                    snapshots.append(orjson.loads(path.read_bytes()))
        return snapshots

    async def _ask(self, path: Path) -> dict[str, Any] | None:
        try:
            async with asyncio.timeout(_TIMEOUT_SECONDS):
                reader, writer = await asyncio.open_unix_connection(str(path), limit=_MAX_SNAPSHOT_BYTES)
                try:
                    raw = await reader.read(-1)
                finally:
                    writer.close()
            return orjson.loads(raw)
        except (ConnectionRefusedError, FileNotFoundError):
            _forget(path)  # a worker that died without closing: nothing listens any more
            return None
        except (TimeoutError, OSError, orjson.JSONDecodeError) as exc:
            log.warning("metrics: worker socket %s did not answer (%s); this scrape leaves it out", path.name, type(exc).__name__)
            return None


def _forget(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()
