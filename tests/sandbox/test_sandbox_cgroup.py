"""Issue 10 item 8: the run-wide caps (memory, processes, CPU), against the real sandbox.

RLIMIT_AS and RLIMIT_CPU are per process: before the per-run cgroup, six
children each holding 400 MB all lived under a "512 MiB" limit. A watcher
thread on the host side sums the resident memory and counts the processes of
the run's pool uids while the run goes on, so what is measured is what the
kernel let the run hold, not what the code inside reports.

Whichever enforcement is active here is tested against what it claims
(``status()["enforcement"]``); where CI requires bwrap
(``TOOLRELAY_SANDBOX_REQUIRE=bwrap``) it must be a cgroup, not the fallback.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Self

import pytest
from msgspec.structs import replace

from toolrelay.tools.base import ToolContext
from toolrelay.tools.python import PythonTool
from toolrelay.tools.sandbox import SandboxSettings
from toolrelay.tools.sandbox.process import ProcessSandbox

from .conftest import RunFn
from .helpers import BACKENDS, TEST_SETTINGS, discard, make_sandbox

MIB = 1024 * 1024
# Six children faulting in 400 MB each against one cap are slow on a loaded
# 2-core VM (5 s measured), hence the wall clock and the two cores.
CAP_SETTINGS = replace(TEST_SETTINGS, memory_mb=512, wall_seconds=12.0, cpu_seconds=12.0, cpu_cores=2.0, sandbox_uid_base=61400)
# A tenth of a core for the CPU test only: uncapped, four busy loops got
# 0.9 s of CPU in 3 s even on the VM loaded by other jobs (6 s when idle),
# well above the 0.3 s this quota allows.
CPU_SETTINGS = replace(CAP_SETTINGS, cpu_cores=0.1, sandbox_uid_base=61402)
_instances: dict[tuple[str, int], ProcessSandbox] = {}


def _instance(request: pytest.FixtureRequest, settings: SandboxSettings) -> ProcessSandbox:
    name = request.param
    key = (name, settings.sandbox_uid_base)
    if key not in _instances:
        _instances[key] = make_sandbox(name, settings)
    sandbox = _instances[key]
    mode = sandbox.enforcement_status()["mode"]
    if name in os.environ.get("TOOLRELAY_SANDBOX_REQUIRE", "").split(","):
        # CI runs on hosts with writable cgroups (v1 there): the fallback
        # would silently weaken the caps.
        assert mode in ("cgroup1", "cgroup2"), sandbox.enforcement_status()
    return sandbox


@pytest.fixture(params=list(BACKENDS))
def capped(request: pytest.FixtureRequest) -> ProcessSandbox:
    return _instance(request, CAP_SETTINGS)


@pytest.fixture(params=list(BACKENDS))
def cpu_capped(request: pytest.FixtureRequest) -> ProcessSandbox:
    return _instance(request, CPU_SETTINGS)


@pytest.fixture(scope="module", autouse=True)
def _discard_instances() -> Iterator[None]:
    yield
    for sandbox in _instances.values():
        discard(sandbox)
    _instances.clear()


class PoolWatcher:
    """Polls /proc for the processes of a sandbox uid pool: peak count and peak summed RSS."""

    def __init__(self, sandbox: ProcessSandbox) -> None:
        s = sandbox.settings
        self.uids = range(s.sandbox_uid_base, s.sandbox_uid_base + s.max_concurrent)
        self.peak_rss = 0
        self.peak_count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _sample(self) -> tuple[int, int]:
        total = count = 0
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                if os.stat(f"/proc/{entry}").st_uid not in self.uids:
                    continue
                with open(f"/proc/{entry}/status") as f:
                    fields = dict(line.split(":", 1) for line in f if ":" in line)
            except OSError:
                continue
            if fields.get("State", "").strip().startswith(("Z", "X")):
                continue
            count += 1
            # Anonymous and shmem pages: what the code allocated (file pages
            # of the interpreter are shared by every process of the run).
            for key in ("RssAnon", "RssShmem"):
                total += int(fields.get(key, "0 kB").split()[0]) * 1024
        return total, count

    def _loop(self) -> None:
        while not self._stop.is_set():
            rss, count = self._sample()
            self.peak_rss = max(self.peak_rss, rss)
            self.peak_count = max(self.peak_count, count)
            time.sleep(0.01)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("the host-side watcher finds the run by its pool uid, which needs root")


SIX_CHILDREN = """
import os, time
SIZE = 400 * 1024 * 1024
kids = []
for i in range(6):
    pid = os.fork()
    if pid == 0:
        try:
            block = b"\\x01" * SIZE  # written, so every page is resident
            os.write(1, b"+")
            time.sleep(1)  # hold it while the siblings allocate theirs
        except MemoryError:
            os.write(1, b"M")
        os._exit(0)
    kids.append(pid)
codes = [os.waitstatus_to_exitcode(os.waitpid(p, 0)[1]) for p in kids]
print()
print(codes)
"""


async def test_six_children_of_400_mb_stay_under_the_run_memory_cap(capped: ProcessSandbox, run: RunFn) -> None:
    _needs_root()
    enforcement = capped.enforcement_status()
    with PoolWatcher(capped) as watch:
        result = await run(capped, SIX_CHILDREN)
    # The run's own processes share the interpreter's copy-on-write heap, each
    # counting it (about 10 MB); 128 MiB of slack covers that, far below the
    # 6 x 400 MB the code asks for.
    bound = enforcement["memory_mb_total"] * MIB + 128 * MIB
    assert watch.peak_rss <= bound, (
        f"the run held {watch.peak_rss // MIB} MiB under a {enforcement['mode']} cap of {enforcement['memory_mb_total']} MiB: {result}"
    )
    if enforcement["mode"] != "rlimit":
        assert watch.peak_rss <= 512 * MIB + 128 * MIB
        # Not all six got their 400 MB; the OOM killer or MemoryError said no.
        assert result.stdout.count("+") < 6 or result.limit == "memory", result
        assert result.limit == "memory" or "M" in result.stdout, result
        tool = PythonTool(capped)
        out = await tool.run({"code": SIX_CHILDREN}, ToolContext(scope="test"))
        assert "memory limit of 512 MB was reached" in out.content or "M" in out.content, out.content


async def test_a_fork_bomb_is_held_to_the_process_cap(capped: ProcessSandbox, run: RunFn) -> None:
    _needs_root()
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    with PoolWatcher(capped) as watch:
        result = await run(capped, bomb, wall_seconds=3)
    assert result.limit == "wall_time", result
    # The sandbox's outermost process counts too (bwrap, the Landlock supervisor).
    assert 0 < watch.peak_count <= capped.settings.nproc + 1, watch.peak_count


BUSY_FOUR = """
import os, resource, time
kids = []
for i in range(4):
    pid = os.fork()
    if pid == 0:
        end = time.monotonic() + 3
        while time.monotonic() < end:
            pass
        os._exit(0)
    kids.append(pid)
started = time.monotonic()
for p in kids:
    os.waitpid(p, 0)
wall = time.monotonic() - started
used = resource.getrusage(resource.RUSAGE_CHILDREN)
print(f"{used.ru_utime + used.ru_stime:.3f} {wall:.3f}")
"""


async def test_four_busy_processes_get_at_most_the_cpu_quota(cpu_capped: ProcessSandbox, run: RunFn) -> None:
    enforcement = cpu_capped.enforcement_status()
    if enforcement["mode"] == "rlimit":
        pytest.skip(f"no per-run CPU cap with the rlimit fallback: {enforcement['reason']}")
    result = await run(cpu_capped, BUSY_FOUR)
    assert result.exit_code == 0 and result.limit is None, result
    cpu, wall = map(float, result.stdout.split())
    cores = enforcement["cpu_cores"]
    assert cores == 0.1
    # The quota allows 0.1 core, i.e. 0.3 s in 3 s; half again plus 0.15 s of slack.
    assert cpu <= cores * wall * 1.5 + 0.15, f"{cpu:.2f} s of CPU in {wall:.2f} s under a {cores} core cap"


def test_status_says_what_is_enforced(capped: ProcessSandbox) -> None:
    enforcement = capped.status()["enforcement"]
    if enforcement["mode"] == "rlimit":
        assert enforcement["memory_mb_total"] == CAP_SETTINGS.memory_mb * CAP_SETTINGS.nproc
        assert enforcement["reason"]
    else:
        assert enforcement == {"mode": enforcement["mode"], "memory_mb_total": 512, "processes_total": CAP_SETTINGS.nproc, "cpu_cores": 2.0}


def _cgroup_parents(sandbox: ProcessSandbox) -> list[Path]:
    enforcement = sandbox.enforcement_status()
    if enforcement["mode"] == "rlimit":
        pytest.skip(f"no run cgroups with the rlimit fallback: {enforcement['reason']}")
    pool = sandbox._cgroups
    assert pool is not None
    return list(dict.fromkeys(pool.parents.values()))


async def test_each_run_cgroup_is_removed_after_its_run(capped: ProcessSandbox, run: RunFn) -> None:
    parents = _cgroup_parents(capped)
    # Three children left sleeping when the run's main process ends.
    result = await run(capped, "import os, time\nfor _ in range(3):\n    if os.fork() == 0:\n        time.sleep(30)\n")
    assert result.exit_code == 0, result
    for parent in parents:
        assert [p.name for p in parent.iterdir() if p.is_dir()] == [], parent


def test_cgroups_left_by_a_crashed_server_are_swept_at_start(capped: ProcessSandbox) -> None:
    parents = _cgroup_parents(capped)
    # A server that died with a run in flight: pid 4194305 is above any pid_max.
    stale_runs = []
    for parent in parents:
        stale = parent.parent / "srv-4194305-1-0"
        (stale / "run-0-dead").mkdir(parents=True)
        stale_runs.append(stale / "run-0-dead")
    survivor = subprocess.Popen(["/bin/sleep", "60"])
    try:
        for run_dir in stale_runs:
            (run_dir / "cgroup.procs").write_text(str(survivor.pid))
        fresh = make_sandbox(capped.backend_name, capped.settings)
        try:
            assert fresh.enforcement_status()["mode"] == capped.enforcement_status()["mode"]
            assert survivor.wait(timeout=10) == -signal.SIGKILL
            assert not any(run_dir.parent.exists() for run_dir in stale_runs)
            # A live sandbox's directory is left alone.
            assert all(parent.exists() for parent in parents)
        finally:
            discard(fresh)
    finally:
        survivor.kill()
        survivor.wait()
