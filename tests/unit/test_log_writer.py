"""app/logs/ as units: the writer keeps order and loses nothing, the formats stay one line."""

from __future__ import annotations

import io
import json
import logging
import threading
import time

from hypothesis import given
from hypothesis import strategies as st

from toolrelay.app.logs import JsonFormatter, LogWriter, PlainFormatter, log_safe
from toolrelay.app.logs.formats import json_clock, plain_clock


def test_writer_keeps_order_across_threads_and_drains_on_close() -> None:
    out = io.StringIO()
    writer = LogWriter(out, flush_seconds=0.01, batch_bytes=256)

    def burst(tag: str) -> None:
        for i in range(2000):
            writer.write(f"{tag} {i}\n")

    threads = [threading.Thread(target=burst, args=(t,)) for t in "abc"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    writer.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 6000
    for tag in "abc":
        assert [int(line.split()[1]) for line in lines if line.startswith(tag)] == list(range(2000))
    writer.write("after close\n")  # written at once
    assert out.getvalue().endswith("after close\n")


def test_an_idle_writer_shows_a_line_within_its_flush_period() -> None:
    out = io.StringIO()
    writer = LogWriter(out, flush_seconds=0.05)
    writer.write("one\n")
    deadline = time.monotonic() + 2.0
    while "one" not in out.getvalue() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert out.getvalue() == "one\n"
    writer.close()


@given(st.floats(min_value=0, max_value=4_000_000_000, allow_nan=False))
def test_clocks_match_strftime(now: float) -> None:
    second = int(now)
    ms = int((now - second) * 1000)
    assert plain_clock().stamp(now) == time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second)) + f",{ms:03d}"
    assert json_clock().stamp(now) == time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)) + f".{ms:03d}Z"


@given(st.text(max_size=300))
def test_formats_give_one_line_whatever_the_message(text: str) -> None:
    record = logging.LogRecord("toolrelay.x", logging.WARNING, __file__, 1, "%s", (text,), None)
    assert "\n" not in PlainFormatter().format(record).replace(text, "")
    line = JsonFormatter().format(record)
    assert "\n" not in line and "\r" not in line
    assert json.loads(line) | {"time": None} == {"time": None, "level": "WARNING", "logger": "toolrelay.x", "message": text}
    safe = log_safe(text, 64)
    assert safe.isprintable() and " " not in safe and len(safe) <= 64 * 10 + 3  # the longest escape is \\U0010ffff
