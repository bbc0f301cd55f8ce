"""A log writer that keeps the event loop out of write(2): lines are appended to a deque and a
thread writes them in batches.

Measured (``bench/access_log.py``): a line through ``logging`` with a ``StreamHandler`` on a file
costs the event loop a ``LogRecord``, a ``Formatter`` pass (``strftime`` per line), a handler lock
and one ``write`` + ``flush`` syscall pair; here the loop pays one ``deque.append`` (atomic under the
GIL, no lock) and the thread pays one ``write`` per batch. The thread wakes every
``flush_seconds`` or as soon as ``batch_bytes`` are waiting, so a busy server writes 64 KiB at a
time and an idle one shows a line within 100 ms.

Nothing is lost on shutdown: :meth:`close` (called by the CLI when the server returns, and
registered with :mod:`atexit` for every other way out) drains what is queued. If the stream blocks
(a full pipe) for long enough that ``max_pending_bytes`` pile up, the writer that appends writes
the backlog itself: the log slows the server down, as a plain ``StreamHandler`` would, rather than
growing memory without bound.
"""

from __future__ import annotations

import atexit
import threading
from collections import deque
from typing import TextIO

FLUSH_SECONDS = 0.1
BATCH_BYTES = 64 * 1024
MAX_PENDING_BYTES = 8 * 1024 * 1024


class LogWriter:
    """Writes whole lines (each ending in ``\\n``) to ``stream`` from a background thread."""

    def __init__(
        self,
        stream: TextIO,
        *,
        flush_seconds: float = FLUSH_SECONDS,
        batch_bytes: int = BATCH_BYTES,
        max_pending_bytes: int = MAX_PENDING_BYTES,
    ) -> None:
        self.stream = stream
        self._lines: deque[str] = deque()
        # Approximate: bumped by writers, reset by the thread without a lock; it only decides when
        # to wake the thread early, never whether a line is written.
        self._pending = 0
        self._flush_seconds = flush_seconds
        self._batch_bytes = batch_bytes
        self._max_pending = max_pending_bytes
        self._wake = threading.Event()
        self._write_lock = threading.Lock()  # taken by the thread and by flush/close, never per line
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="toolrelay-log-writer", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def write(self, line: str) -> None:
        """Queue ``line`` (already ending in a newline). Safe from any thread; no lock, no syscall."""
        self._lines.append(line)
        pending = self._pending + len(line)
        self._pending = pending
        if pending >= self._batch_bytes or self._closed:
            if pending >= self._max_pending or self._closed:
                self.flush()
            elif not self._wake.is_set():
                self._wake.set()

    def flush(self) -> None:
        """Write everything queued so far, now, from the calling thread."""
        with self._write_lock:
            self._drain()

    def close(self) -> None:
        """Stop the thread and write what is left; idempotent. Lines written afterwards go out at once."""
        if self._closed:
            self.flush()
            return
        self._closed = True
        self._wake.set()
        self._thread.join(timeout=5.0)
        self.flush()
        atexit.unregister(self.close)

    def _run(self) -> None:
        wake = self._wake
        while not self._closed:
            wake.wait(self._flush_seconds)
            wake.clear()
            if self._lines:
                self.flush()

    def _drain(self) -> None:
        lines = self._lines
        batch: list[str] = []
        take = lines.popleft
        try:
            while True:
                batch.append(take())
        except IndexError:
            pass
        self._pending = 0
        if not batch:
            return
        try:
            self.stream.write("".join(batch))
            self.stream.flush()
        except (OSError, ValueError):
            # The stream is gone (closed stderr, a broken pipe): nothing useful to do with log lines.
            pass
