"""Client-controlled text made safe for a log line.

A newline in a model id would forge log lines, a 5 MB id would bloat the log, and a space would
forge ``key=...`` fields: values are cut and escaped before they reach any log format.
"""

from __future__ import annotations

MAX_MODEL_CHARS = 128
MAX_PATH_CHARS = 512
MAX_FIELD_CHARS = 64


def log_safe(value: str, limit: int) -> str:
    """``value`` cut to ``limit`` characters with control and other unprintable characters escaped (``\\n``, ``\\x1b``)."""
    cut = len(value) > limit
    if cut:
        value = value[:limit]
    if not value.isprintable() or " " in value or "\\" in value:
        # Spaces too (they would forge "key=..." fields), and backslashes so escapes stay unambiguous.
        value = "".join(c if c.isprintable() and c != " " and c != "\\" else _escape_char(c) for c in value)
    return value + "..." if cut else value


def _escape_char(c: str) -> str:
    return repr(c)[1:-1] if c != " " else "\\x20"
