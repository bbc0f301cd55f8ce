"""Process-wide logging set-up for ``toolrelay serve`` (and each ``--workers`` process)."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

from toolrelay.app.logs.formats import LogFormat, WriterHandler
from toolrelay.app.logs.writer import LogWriter

# aiohttp and uvicorn repeat what our access line says, at a cost per request.
_NOISY = ("uvicorn.access", "aiohttp.access")


def install_logging(level: str, log_format: LogFormat = "plain", stream: TextIO | None = None) -> WriterHandler:
    """Send every log record (toolrelay's, uvicorn's, libraries') to ``stream`` (stderr) in
    ``log_format`` through one background writer. Handlers other code attached stay; a handler an
    earlier call installed is closed (its lines written) and replaced."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, WriterHandler)]:
        root.removeHandler(old)
        old.close()
    handler = WriterHandler(LogWriter(stream if stream is not None else sys.stderr), log_format)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    for noisy in _NOISY:
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return handler
