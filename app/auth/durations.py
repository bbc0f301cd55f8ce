"""Durations in the two shapes this package speaks: Go-style for headers, human input for the CLI."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")


def go_duration(ms: float) -> str:
    """Format like Go's ``time.Duration.String()``, which OpenAI's reset headers use: ``20ms``, ``1s``, ``6m0s``."""
    ms = max(0.0, ms)
    if ms < 1000:
        whole = math.ceil(ms)
        return f"{whole}ms" if whole else "0s"
    seconds = math.ceil(ms) / 1000
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    sec_text = f"{secs:.3f}".rstrip("0").rstrip(".")
    if hours:
        return f"{int(hours)}h{int(minutes)}m{sec_text}s"
    if minutes:
        return f"{int(minutes)}m{sec_text}s"
    return f"{sec_text}s"


def parse_duration(text: str) -> float:
    """``"90s"``, ``"12h"``, ``"30d"``, ``"2w"`` -> seconds."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"not a duration: {text!r} (use e.g. 90s, 12h, 30d, 2w)")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_when(text: str, *, now: float, future: bool) -> float:
    """An absolute time (ISO date or date-time, UTC unless it says otherwise) or a duration from now.

    ``future`` picks the direction of a bare duration: ``--expires 30d`` is 30
    days ahead, ``--since 7d`` is 7 days back.
    """
    try:
        seconds = parse_duration(text)
    except ValueError:
        pass
    else:
        return now + seconds if future else now - seconds
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not a time or duration: {text!r} (use 2025-01-31, 2025-01-31T12:00, or 30d)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
