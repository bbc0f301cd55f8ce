"""toolrelay's logs: the access line, the ``plain`` and ``json`` formats, and a writer that keeps
log I/O off the event loop."""

from toolrelay.app.logs.access import ACCESS_LOGGER, AccessLog
from toolrelay.app.logs.formats import JsonFormatter, LogFormat, PlainFormatter, WriterHandler
from toolrelay.app.logs.safe import log_safe
from toolrelay.app.logs.setup import install_logging
from toolrelay.app.logs.writer import LogWriter

__all__ = [
    "ACCESS_LOGGER",
    "AccessLog",
    "JsonFormatter",
    "LogFormat",
    "LogWriter",
    "PlainFormatter",
    "WriterHandler",
    "install_logging",
    "log_safe",
]
