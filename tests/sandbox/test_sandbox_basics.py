"""Happy paths and the result contract, for every backend the host supports."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from fakes.waiting import async_wait_until
from toolrelay.tools.sandbox.base import RunLimits
from toolrelay.tools.sandbox.selector import pool_processes

from .helpers import BACKENDS, TEST_SETTINGS, discard, make_sandbox


async def test_print(sandbox, run):
    result = await run(sandbox, "print('hello')\nprint(2 + 2)")
    assert result.ok
    assert result.stdout == "hello\n4\n"
    assert result.stderr == ""
    assert result.value is None
    assert result.exit_code == 0
    assert result.limit is None and result.error is None
    assert result.backend == sandbox.backend_name
    assert 0 < result.duration_ms < 5000


async def test_final_expression_value(sandbox, run):
    result = await run(sandbox, "import math\nx = [math.factorial(5), 'a']\nx")
    assert result.ok
    assert result.value == "[120, 'a']"
    assert result.stdout == ""
    none = await run(sandbox, "None")
    assert none.value is None
    assigned = await run(sandbox, "y = 3")
    assert assigned.value is None


async def test_value_is_cut(sandbox, run):
    result = await run(sandbox, "'x' * 100000")
    assert result.value is not None
    assert len(result.value) == TEST_SETTINGS.value_chars


async def test_hostile_repr(sandbox, run):
    result = await run(sandbox, "class A:\n    def __repr__(self):\n        raise ValueError('no')\nA()")
    assert result.value == "<repr() failed: ValueError>"


async def test_exception_traceback_in_stderr(sandbox, run):
    result = await run(sandbox, "def f():\n    return 1 / 0\nprint('before')\nf()")
    assert not result.ok
    assert result.exception == "ZeroDivisionError"
    assert result.exit_code == 1
    assert result.stdout == "before\n"
    assert "Traceback" in result.stderr
    assert 'File "<code>", line 2, in f' in result.stderr
    assert "return 1 / 0" in result.stderr  # the source line is shown
    assert "runner.py" not in result.stderr  # the runner's frames are hidden
    assert result.limit is None


async def test_syntax_error(sandbox, run):
    result = await run(sandbox, "def broken(:\n    pass")
    assert result.exception == "SyntaxError"
    assert "SyntaxError" in result.stderr


async def test_sys_exit_codes(sandbox, run):
    assert (await run(sandbox, "import sys\nsys.exit(3)")).exit_code == 3
    assert (await run(sandbox, "import sys\nsys.exit()")).exit_code == 0
    message = await run(sandbox, "import sys\nsys.exit('bye')")
    assert message.exit_code == 1 and "bye" in message.stderr


async def test_unicode_and_undecodable_output(sandbox, run):
    result = await run(sandbox, "print('héllo ✓ \\udcff')\nimport sys\nsys.stdout.flush()\nsys.stdout.buffer.write(b'\\xff\\n')")
    assert "héllo ✓" in result.stdout
    assert result.exception is None


async def test_stdin_is_empty(sandbox, run):
    result = await run(sandbox, "input()")
    assert result.exception == "EOFError"


async def test_fresh_interpreter_each_run(sandbox, run):
    await run(sandbox, "import builtins\nbuiltins.leak = 1\nopen('state.txt', 'w').write('1')")
    result = await run(sandbox, "import builtins, os\n(hasattr(builtins, 'leak'), os.path.exists('state.txt'))")
    assert result.value == "(False, False)"


async def test_stdlib_works(sandbox, run):
    code = """
import json, re, decimal, sqlite3, statistics, datetime, hashlib, zlib, tempfile, subprocess, threading
db = sqlite3.connect(":memory:")
db.execute("create table t (x)")
db.executemany("insert into t values (?)", [(i,) for i in range(10)])
t = threading.Thread(target=lambda: None); t.start(); t.join()
with tempfile.NamedTemporaryFile("w") as f:
    f.write("ok")
p = subprocess.run(["echo", "child"], capture_output=True, text=True)
(db.execute("select sum(x) from t").fetchone()[0], statistics.mean([1, 2, 3]), p.stdout.strip())
"""
    result = await run(sandbox, code)
    assert result.ok, result.stderr
    assert result.value == "(45, 2, 'child')"


def test_limits_can_only_be_lowered():
    limits = RunLimits.of(TEST_SETTINGS, wall_seconds=1000, memory_mb=10, output_bytes=None, cpu_seconds=0)
    assert limits.wall_seconds == TEST_SETTINGS.wall_seconds
    assert limits.memory_mb == 10
    assert limits.output_bytes == TEST_SETTINGS.output_bytes
    assert limits.cpu_seconds == TEST_SETTINGS.cpu_seconds


async def test_code_too_large_is_refused(sandbox):
    result = await sandbox.run("x = 1\n" * (TEST_SETTINGS.max_code_bytes // 4))
    assert result.error is not None and "too large" in result.error
    assert result.exit_code is None


async def test_non_string_code_is_refused(sandbox):
    result = await sandbox.run(b"print(1)")  # type: ignore[arg-type]
    assert result.error == "code must be a string"


async def test_cancelled_run_is_killed_and_slot_released(sandbox):
    task = asyncio.ensure_future(sandbox.run("import time\ntime.sleep(60)"))
    # Cancel a run that is really under way: it holds its slot and (where the uid
    # pool is observable, as root) its child process exists.
    await async_wait_until(lambda: sandbox.running() == 1, what="the run to take its slot")
    if os.geteuid() == 0:
        await async_wait_until(lambda: pool_processes(sandbox.settings), what="the run's process")
    task.cancel()
    started = time.monotonic()
    while sandbox.running() and time.monotonic() - started < 5:
        await asyncio.sleep(0.02)
    assert sandbox.running() == 0
    assert pool_processes(sandbox.settings) == []
    # Both slots are free again.
    results = await asyncio.wait_for(asyncio.gather(*(sandbox.run("1", queue_timeout_seconds=0.5) for _ in range(TEST_SETTINGS.max_concurrent))), 15)
    assert [r.value for r in results] == ["1"] * TEST_SETTINGS.max_concurrent
    assert pool_processes(sandbox.settings) == []


def test_runs_under_uvloop():
    # The server runs on uvloop: no asyncio child watcher is involved.
    uvloop = pytest.importorskip("uvloop")
    for name in BACKENDS:
        try:
            sandbox = make_sandbox(name)
        except pytest.skip.Exception:
            continue
        try:

            async def both(sb=sandbox):
                return await asyncio.gather(sb.run("print(1)"), sb.run("import time\ntime.sleep(9)", wall_seconds=1))

            quick, slow = uvloop.run(both())
            assert quick.stdout == "1\n"
            assert slow.limit == "wall_time"
            assert pool_processes(sandbox.settings) == []
        finally:
            discard(sandbox)
