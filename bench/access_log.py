"""CPU per access line, every thread counted (the writer thread's batched writes included).

Writes N access lines for a realistic request (routed model, tokens, key id) to a file, as
``toolrelay serve`` does to stderr redirected to a log file or journald, through each candidate::

    python bench/access_log.py             # 50000 lines per case, best of 5 alternating rounds

Cases:

- ``logging StreamHandler``: a ``LogRecord`` per line through ``logging``'s ``StreamHandler`` with
  the ``%(asctime)s`` ``Formatter`` (what every line cost before app/logs/; the access line still
  takes this path when an embedding application attaches its own handler).
- ``QueueHandler + QueueListener``: the standard library's off-thread logging (a record and a
  ``queue.Queue`` put per line on the caller's thread, formatted and written by the listener).
- ``WriterHandler via logging``: a record per line, formatted on the caller's thread, written in
  batches by app/logs/'s writer thread (every line that is not the access line).
- ``direct, plain`` / ``direct, json``: the access line's own path when toolrelay's handler is the
  only one (what ``toolrelay serve`` runs): no record, one f-string (or ``orjson.dumps``), a
  ``deque.append``; the writer thread writes 64 KiB or 100 ms at a time.
"""

from __future__ import annotations

import argparse
import logging
import logging.handlers
import queue
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from toolrelay.app.logs import AccessLog, LogWriter, WriterHandler
from toolrelay.app.middleware import RequestInfo
from toolrelay.app.usage import RequestUsage

SCOPE = {"type": "http", "method": "POST", "path": "/v1/chat/completions"}


def _info() -> RequestInfo:
    info = RequestInfo("req_0123456789abcdef0123456789abcdef")
    info.model = "gpt-4o-mini"
    info.mode = "proxy"
    info.status = 200
    info.key_id = "a1b2c3d4e5f6"
    info.usage = RequestUsage(prompt_tokens=182, completion_tokens=24)
    return info


def _install(handler: logging.Handler) -> Callable[[], None]:
    """``handler`` as the root logger's only handler; returns the undo."""
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)

    def undo() -> None:
        root.handlers[:] = saved

    return undo


def case_stream_handler(path: Path) -> tuple[Callable[[], None], Callable[[], None]]:
    stream = path.open("w")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    undo = _install(handler)
    return _writer(), lambda: (undo(), handler.close(), stream.close())  # type: ignore[func-returns-value]


def case_queue(path: Path) -> tuple[Callable[[], None], Callable[[], None]]:
    stream = path.open("w")
    target = logging.StreamHandler(stream)
    target.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    lines: queue.Queue[Any] = queue.Queue()
    listener = logging.handlers.QueueListener(lines, target)
    listener.start()
    undo = _install(logging.handlers.QueueHandler(lines))

    def done() -> None:
        listener.stop()  # drains the queue
        undo()
        target.close()
        stream.close()

    return _writer(), done


def _writer_handler(path: Path, log_format: Any, *, via_logging: bool) -> tuple[Callable[[], None], Callable[[], None]]:
    stream = path.open("w")
    handler = WriterHandler(LogWriter(stream), log_format)
    undo = _install(handler)
    if via_logging:
        # A second (silent) handler on the root: the access line then takes the logging path.
        logging.getLogger().addHandler(logging.NullHandler())

    def done() -> None:
        handler.close()
        undo()
        stream.close()

    return _writer(), done


def _writer() -> Callable[[], None]:
    access = AccessLog()
    info = _info()
    return lambda: access.record(SCOPE, info)


CASES: dict[str, Callable[[Path], tuple[Callable[[], None], Callable[[], None]]]] = {
    "logging StreamHandler": case_stream_handler,
    "QueueHandler + QueueListener": case_queue,
    "WriterHandler via logging": lambda p: _writer_handler(p, "plain", via_logging=True),
    "direct, plain": lambda p: _writer_handler(p, "plain", via_logging=False),
    "direct, json": lambda p: _writer_handler(p, "json", via_logging=False),
}


def run(name: str, lines: int, work: Path) -> tuple[float, float]:
    """(µs of process CPU per line, µs of the caller's wall time per line)."""
    path = work / f"{name.replace(' ', '_')}.log"
    write, done = CASES[name](path)
    cpu = time.process_time()
    wall = time.perf_counter()
    for _ in range(lines):
        write()
    caller = time.perf_counter() - wall
    done()  # drains the writer: its CPU counts
    total = time.process_time() - cpu
    written = sum(1 for _ in path.open())
    assert written == lines, (name, written, lines)
    return total / lines * 1e6, caller / lines * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", "--lines", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    best: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            for name in CASES:
                cpu, caller = run(name, args.lines, Path(tmp))
                old = best.get(name)
                best[name] = (min(cpu, old[0]), min(caller, old[1])) if old else (cpu, caller)
    print(f"{'case':<30} {'CPU µs/line (all threads)':>26} {'caller µs/line':>15}")
    for name, (cpu, caller) in best.items():
        print(f"{name:<30} {cpu:>26.2f} {caller:>15.2f}")


if __name__ == "__main__":
    main()
