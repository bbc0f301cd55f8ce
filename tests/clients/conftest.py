"""What the Python agent-framework tests share: no network, and the relay's own record of each request.

``offline`` (autouse) switches off every telemetry channel the clients have
(LangSmith tracing, the Agents SDK's trace export, logfire); a test that
reached the internet would hang or fail on CI, which has none.

``served`` records the relay's access log: which endpoint each request of a
client reached (``("POST", "/v1/responses", 200)``), so a test proves the
client spoke the API it is documented to speak, not only that an answer came
back.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterator

import pytest

_ACCESS_LINE = re.compile(r"^(\S+) (\S+) (\d+) ")


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LANGSMITH_TRACING", "false")
    monkeypatch.setenv("LANGCHAIN_TRACING_V2", "false")
    monkeypatch.setenv("OPENAI_AGENTS_DISABLE_TRACING", "1")
    monkeypatch.setenv("LOGFIRE_SEND_TO_LOGFIRE", "false")
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


class ServedRequests(logging.Handler):
    """The relay's access lines as ``(method, path, status)``, in the order they were written."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self._seen: list[tuple[str, str, int]] = []
        self._cond = threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
        match = _ACCESS_LINE.match(record.getMessage())
        if match:
            with self._cond:
                self._seen.append((match[1], match[2], int(match[3])))
                self._cond.notify_all()

    def wait(self, count: int, timeout: float = 10.0) -> list[tuple[str, str, int]]:
        """The first ``count`` requests (a stream's line is written when it ends, after the client may have returned)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self._seen) < count:
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"the relay logged {len(self._seen)} requests, expected {count}: {self._seen}"
                self._cond.wait(remaining)
            return list(self._seen)

    def exactly(self, count: int) -> list[tuple[str, str, int]]:
        """All requests, asserting there are ``count`` of them (waits for late lines, then for strays)."""
        seen = self.wait(count)
        time.sleep(0.05)
        with self._cond:
            assert self._seen == seen, f"more requests than expected: {self._seen}"
        return seen


@pytest.fixture
def served() -> Iterator[ServedRequests]:
    logger = logging.getLogger("toolrelay.access")
    handler = ServedRequests()
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
