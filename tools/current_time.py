"""``current_time``: the date and time now, in UTC or a named time zone.

Models have no clock; this is the smallest useful tool and a harmless one.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

from toolrelay.tools.base import ToolContext, ToolResult


class CurrentTimeTool:
    name = "current_time"
    description = (
        "Get the current date and time. Use it whenever the answer depends on today's date or the time now. "
        "Optionally give an IANA time zone such as 'Europe/Paris'; the default is UTC."
    )
    parameters: dict[str, Any] = {
        "type": "object",
        "properties": {
            "timezone": {"type": "string", "description": "IANA time zone name, e.g. 'America/New_York'. Default: UTC."},
        },
        "additionalProperties": False,
    }
    timeout = 5.0

    def __init__(self, clock: Callable[[], datetime] | None = None) -> None:
        self._clock = clock or (lambda: datetime.now(UTC))

    async def run(self, arguments: dict[str, Any], context: ToolContext) -> ToolResult:
        name = arguments.get("timezone") or "UTC"
        try:
            zone = ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            return ToolResult.error(f"unknown time zone {name!r}; use an IANA name like 'Europe/Berlin'")
        now = self._clock().astimezone(zone)
        payload = {
            "datetime": now.isoformat(timespec="seconds"),
            "date": now.date().isoformat(),
            "time": now.strftime("%H:%M:%S"),
            "weekday": now.strftime("%A"),
            "timezone": name,
            "unix": int(now.timestamp()),
        }
        return ToolResult(content=orjson.dumps(payload).decode(), data={"timezone": name})
