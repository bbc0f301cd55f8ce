"""Reading Server-Sent Events from raw bytes, the way a strict client does.

:func:`parse_sse` splits a complete body into events; :class:`SSEStream`
reads a live ``httpx`` streaming response. Each event is a :class:`SSEEvent`
with ``data`` (the joined ``data:`` lines), ``comments`` (``:`` lines), the
``event`` name if any, and ``json`` (the parsed data, or ``None`` for
``[DONE]``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

__all__ = ["SSEEvent", "data_events", "json_chunks", "parse_sse"]


@dataclass
class SSEEvent:
    data: str | None = None
    event: str | None = None
    comments: list[str] = field(default_factory=list)
    raw: bytes = b""

    @property
    def is_done(self) -> bool:
        return self.data == "[DONE]"

    @property
    def json(self) -> Any:
        if self.data is None or self.is_done:
            return None
        return json.loads(self.data)


def parse_sse(raw: bytes) -> list[SSEEvent]:
    """Every event in ``raw`` (blank-line separated), including comment-only ones.

    A trailing block without its blank line (a cut stream) is returned too,
    with ``raw`` not ending in a blank line, so a test can see it.
    """
    events: list[SSEEvent] = []
    text = raw.replace(b"\r\n", b"\n")
    blocks = text.split(b"\n\n")
    for i, block in enumerate(blocks):
        if not block.strip(b"\n"):
            continue
        ev = SSEEvent(raw=block + (b"\n\n" if i < len(blocks) - 1 else b""))
        data_lines = []
        for line in block.split(b"\n"):
            if line.startswith(b":"):
                ev.comments.append(line[1:].strip().decode())
            elif line.startswith(b"data:"):
                data_lines.append(line[5:].removeprefix(b" ").decode())
            elif line.startswith(b"event:"):
                ev.event = line[6:].strip().decode()
        if data_lines:
            ev.data = "\n".join(data_lines)
        events.append(ev)
    return events


def data_events(raw: bytes) -> list[SSEEvent]:
    """Only the events with a ``data:`` field."""
    return [e for e in parse_sse(raw) if e.data is not None]


def json_chunks(raw: bytes) -> list[dict[str, Any]]:
    """The parsed JSON of every data event except ``[DONE]``."""
    return [e.json for e in data_events(raw) if not e.is_done]
