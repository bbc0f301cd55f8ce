"""The two line formats, ``plain`` (the default) and ``json``, and the handler that writes them.

Both are cheap on purpose: the timestamp's date and time are formatted once per second (``strftime``
per line was most of ``logging.Formatter``'s cost) and a line is one f-string or one
``orjson.dumps``. :class:`WriterHandler` hands lines to a :class:`LogWriter` thread and takes no
lock per record (the writer's queue is a deque; ``Handler.handle`` would lock around ``emit``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Literal

import orjson

from toolrelay.app.logs.writer import LogWriter

LogFormat = Literal["plain", "json"]

#: The attribute a record routed through :mod:`logging` carries its access fields in (``extra=``).
ACCESS_FIELDS = "access"


class SecondClock:
    """A timestamp whose date and time part is formatted once per second."""

    __slots__ = ("_convert", "_cached", "_pattern", "_separator", "_suffix")

    def __init__(self, pattern: str, separator: str, suffix: str = "", *, utc: bool = False) -> None:
        self._pattern = pattern
        self._separator = separator
        self._suffix = suffix
        self._convert: Callable[[float], time.struct_time] = time.gmtime if utc else time.localtime
        # (second, its text) as one tuple: threads may race to refresh it, never to mismatch it.
        self._cached: tuple[int, str] = (-1, "")

    def stamp(self, now: float) -> str:
        second = int(now)
        cached = self._cached
        if cached[0] != second:
            cached = self._cached = (second, time.strftime(self._pattern, self._convert(second)))
        return f"{cached[1]}{self._separator}{int((now - second) * 1000):03d}{self._suffix}"


def plain_clock() -> SecondClock:
    """The stamp ``logging``'s default ``%(asctime)s`` writes: local time, ``2026-12-06 10:11:12,345``."""
    return SecondClock("%Y-%m-%d %H:%M:%S", ",")


def json_clock() -> SecondClock:
    """RFC 3339 in UTC with milliseconds: ``2026-12-06T10:11:12.345Z``."""
    return SecondClock("%Y-%m-%dT%H:%M:%S", ".", "Z", utc=True)


class PlainFormatter(logging.Formatter):
    """``<time> <LEVEL> <logger> <message>``, the traceback (if any) on the lines after."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = plain_clock()

    def format(self, record: logging.LogRecord) -> str:
        line = f"{self.clock.stamp(record.created)} {record.levelname} {record.name} {record.getMessage()}"
        extra = _exception_text(self, record)
        return f"{line}\n{extra}" if extra else line


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``time``, ``level``, ``logger``, then the access fields (access
    lines) or ``message`` (every other line), and ``exception`` with a traceback. No newline inside:
    ``orjson`` escapes control characters, so no text can start a second line."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = json_clock()

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = {"time": self.clock.stamp(record.created), "level": record.levelname, "logger": record.name}
        access = getattr(record, ACCESS_FIELDS, None)
        if isinstance(access, dict):
            fields.update(access)  # pyright: ignore[reportUnknownArgumentType] - our own str-keyed dict
        else:
            fields["message"] = record.getMessage()
        extra = _exception_text(self, record)
        if extra:
            fields["exception"] = extra
        return orjson.dumps(fields, default=str).decode()


def _exception_text(formatter: logging.Formatter, record: logging.LogRecord) -> str:
    if record.exc_info and not record.exc_text:
        record.exc_text = formatter.formatException(record.exc_info)
    parts = [p for p in (record.exc_text, record.stack_info and formatter.formatStack(record.stack_info)) if p]
    return "\n".join(parts)


def formatter_for(log_format: LogFormat) -> PlainFormatter | JsonFormatter:
    return JsonFormatter() if log_format == "json" else PlainFormatter()


class WriterHandler(logging.Handler):
    """A :class:`logging.Handler` that formats on the caller's thread and writes on the writer's."""

    def __init__(self, writer: LogWriter, log_format: LogFormat = "plain", level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self.writer = writer
        self.log_format: LogFormat = log_format
        formatter = formatter_for(log_format)
        self.setFormatter(formatter)
        # The access line's direct path (app/logs/access.py) stamps its lines with the same clock.
        self.clock = formatter.clock

    def handle(self, record: logging.LogRecord) -> bool:  # pyright: ignore[reportIncompatibleMethodOverride] - bool on 3.11, LogRecord | bool on 3.12+
        # No handler lock: formatting touches only the record, and the writer's queue is thread-safe.
        if not self.filter(record):
            return False
        self.emit(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.writer.write(self.format(record) + "\n")
        except Exception:  # noqa: BLE001 - logging must never raise into the caller
            self.handleError(record)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
        super().close()
