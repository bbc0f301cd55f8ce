"""Per-run cgroups: one cap on a whole run's memory, processes and CPU.

RLIMIT_AS and RLIMIT_CPU are per process: a run that forked six children
held 6 x 400 MB under a "512 MiB" limit (measured). A cgroup per run caps
the sum. cgroup v2 is preferred (a delegated subtree: memory.max,
memory.swap.max=0, pids.max, cpu.max, cgroup.kill); cgroup v1 is the second
choice (memory.limit_in_bytes and memory.memsw.limit_in_bytes, pids.max,
cpu.cfs_quota_us, one directory per controller hierarchy). When neither is
writable, :func:`open_cgroups` says why and the sandbox keeps its per-process
rlimits only (see docs/tools.md for what that bounds).

Layout, per hierarchy (v2: one)::

    <the server's own cgroup>/toolrelay/srv-<pid>-<starttime>-<n>/run-<slot>-<hex>

Only a directory whose process is gone is swept at start-up, so servers and
sandbox instances sharing a parent never touch each other's runs.

The run joins its cgroup before any untrusted code runs: the code reaches
the sandbox on stdin, and the server writes it only after :meth:`RunCgroup.join_tree`
has moved the sandbox's outermost process and every process it has started
so far (each moved before its children are listed, so a fork racing the walk
inherits the new cgroup). The move runs while the sandboxed interpreter is
still starting: a move into a cgroup waits for an RCU grace period (12 ms
measured on the v1 reference VM), which made start-up 15 ms slower when a
shell wrapper joined before exec'ing bwrap. A hook between fork and exec
(``preexec_fn``) would make Python fork the whole server instead of
vfork()ing it (46 ms against 4 ms with 1 GB RSS).
"""

from __future__ import annotations

import atexit
import errno
import itertools
import logging
import os
import secrets
import signal
import subprocess
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("toolrelay.sandbox")

CONTROLLERS = ("memory", "pids", "cpu")
CPU_PERIOD_US = 100_000
_PARENT = "toolrelay"
_instances = itertools.count()
# Pools still open when the interpreter exits (a server stopped without
# aclose, a test session): their directories are removed then rather than
# left for the next start's sweep, which only sees its own parent.
_open_pools: weakref.WeakSet[CgroupPool] = weakref.WeakSet()


class CgroupUnavailable(Exception):
    """Why no per-run cgroup can be made here."""


def _read(path: Path) -> str:
    with open(path, encoding="ascii", errors="replace") as f:
        return f.read()


def _write(path: Path, value: str) -> None:
    # One write() per value: cgroup files take exactly one value per write.
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _counter(path: Path, key: str) -> int:
    """``key N`` from a flat-keyed cgroup file (memory.events, pids.events, oom_control)."""
    try:
        for line in _read(path).splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == key:
                return int(parts[1])
    except (OSError, ValueError):
        pass
    return 0


def _start_time(pid: int) -> str | None:
    """Field 22 of /proc/<pid>/stat (start time in ticks): with the pid, names one process."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _mounts() -> list[tuple[str, str, str, set[str]]]:
    """(mount root, mount point, fstype, super options) of every cgroup mount."""
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, rest = left.split(), right.split()
            if len(fields) < 5 or len(rest) < 3 or rest[0] not in ("cgroup", "cgroup2"):
                continue
            root, point = (p.replace("\\040", " ") for p in fields[3:5])
            found.append((root, point, rest[0], set(rest[2].split(","))))
    return found


def _own_paths() -> dict[str, str]:
    """Controller name (``""`` for v2) -> this process's cgroup path."""
    paths: dict[str, str] = {}
    with open("/proc/self/cgroup", encoding="utf-8", errors="replace") as f:
        for line in f:
            _, names, path = line.rstrip("\n").split(":", 2)
            for name in names.split(",") if names else [""]:
                paths[name] = path
    return paths


def _under(point: str, root: str, path: str) -> Path | None:
    """Where cgroup ``path`` appears under a mount of cgroup ``root`` at ``point``."""
    if path != root and not path.startswith(root.rstrip("/") + "/"):
        return None  # our cgroup is not visible through this mount
    return Path(point) / os.path.relpath(path, root)


@dataclass(eq=False)
class RunCgroup:
    """The cgroup directories of one run (v2: one directory; v1: one per hierarchy)."""

    version: int
    dirs: dict[str, Path]  # controller ("" for v2) -> directory
    name: str

    def procs_files(self) -> list[Path]:
        return [d / "cgroup.procs" for d in dict.fromkeys(self.dirs.values())]

    def join(self, pid: int) -> bool:
        """Move process ``pid`` (all its threads) into the run; False if it is gone."""
        for procs in self.procs_files():
            try:
                _write(procs, str(pid))
            except ProcessLookupError:
                return False
        return True

    def join_tree(self, root: int) -> None:
        """Move ``root`` and all its descendants into the run (OSError if a move fails)."""
        todo = [root]
        while todo:
            pid = todo.pop()
            if not self.join(pid):
                continue
            # Listed only after the move: a child forked later inherits the run cgroup.
            try:
                tasks = os.listdir(f"/proc/{pid}/task")
            except OSError:
                continue
            for tid in tasks:
                try:
                    todo.extend(int(k) for k in _read(Path(f"/proc/{pid}/task/{tid}/children")).split())
                except (OSError, ValueError):
                    pass

    def _dir(self, controller: str) -> Path:
        return self.dirs[""] if self.version == 2 else self.dirs[controller]

    def oom_kills(self) -> int:
        if self.version == 2:
            return _counter(self._dir("memory") / "memory.events", "oom_kill")
        return _counter(self._dir("memory") / "memory.oom_control", "oom_kill")

    def fork_refusals(self) -> int:
        return _counter(self._dir("pids") / "pids.events", "max")

    def pids(self) -> set[int]:
        found: set[int] = set()
        for d in dict.fromkeys(self.dirs.values()):
            try:
                found.update(int(p) for p in _read(d / "cgroup.procs").split())
            except (OSError, ValueError):
                pass
        return found

    def kill(self) -> None:
        """SIGKILL every process in the run; one pass, does not wait."""
        if self.version == 2:
            try:
                _write(self.dirs[""] / "cgroup.kill", "1")  # atomic, also catches forks in flight
                return
            except OSError:
                pass  # Linux < 5.14: signal them one by one
        for pid in self.pids():
            try:
                fd = os.pidfd_open(pid)
            except OSError:
                continue
            try:
                # Pinned, then checked: a pid recycled since the read is skipped.
                with open(f"/proc/{pid}/cgroup", encoding="utf-8", errors="replace") as f:
                    if self.name in f.read():
                        signal.pidfd_send_signal(fd, signal.SIGKILL)
            except OSError:
                pass
            finally:
                os.close(fd)

    def destroy(self, timeout: float = 5.0) -> bool:
        """Kill everything in the run, then remove its directories; False if one stayed."""
        deadline = time.monotonic() + timeout
        left = list(dict.fromkeys(self.dirs.values()))
        while left:
            self.kill()
            for d in list(left):
                try:
                    os.rmdir(d)
                    left.remove(d)
                except FileNotFoundError:
                    left.remove(d)
                except OSError as exc:
                    if exc.errno != errno.EBUSY:
                        left.remove(d)
            if not left or time.monotonic() > deadline:
                break
            time.sleep(0.005)
        return not left


@dataclass(eq=False)
class CgroupPool:
    """This sandbox instance's directory in each hierarchy; makes and limits run cgroups."""

    version: int
    parents: dict[str, Path]  # controller ("" for v2) -> .../toolrelay/srv-...
    cpu_cores: float
    _owner: int = field(default_factory=os.getpid)  # a forked child must not remove its parent's

    @property
    def mode(self) -> str:
        return f"cgroup{self.version}"

    def create(self, slot: int, memory_mb: int, pids: int) -> RunCgroup:
        name = f"run-{slot}-{secrets.token_hex(6)}"
        run = RunCgroup(self.version, {c: p / name for c, p in self.parents.items()}, name)
        try:
            for d in dict.fromkeys(run.dirs.values()):
                os.mkdir(d, 0o755)
            self._limit(run, memory_mb * 1024 * 1024, pids)
        except BaseException:
            run.destroy(timeout=1.0)
            raise
        return run

    def _limit(self, run: RunCgroup, memory: int, pids: int) -> None:
        quota = max(1000, int(self.cpu_cores * CPU_PERIOD_US))
        if self.version == 2:
            d = run.dirs[""]
            _write(d / "memory.max", str(memory))
            if (d / "memory.swap.max").exists():  # absent without swap accounting
                _write(d / "memory.swap.max", "0")
            _write(d / "pids.max", str(pids))
            _write(d / "cpu.max", f"{quota} {CPU_PERIOD_US}")
            return
        mem = run.dirs["memory"]
        _write(mem / "memory.limit_in_bytes", str(memory))
        if (mem / "memory.memsw.limit_in_bytes").exists():  # swap accounting on: no swapping past the cap
            _write(mem / "memory.memsw.limit_in_bytes", str(memory))
        _write(run.dirs["pids"] / "pids.max", str(pids))
        _write(run.dirs["cpu"] / "cpu.cfs_period_us", str(CPU_PERIOD_US))
        _write(run.dirs["cpu"] / "cpu.cfs_quota_us", str(quota))

    def __post_init__(self) -> None:
        _open_pools.add(self)

    def close(self) -> None:
        _open_pools.discard(self)
        for parent in dict.fromkeys(self.parents.values()):
            _remove_tree(parent)
            try:
                os.rmdir(parent.parent)  # the shared "toolrelay" directory, once nobody uses it
            except OSError:
                pass


def _remove_tree(parent: Path) -> None:
    """Kill and remove every run cgroup under ``parent``, then ``parent``."""
    try:
        runs = [e for e in os.scandir(parent) if e.is_dir(follow_symlinks=False)]
    except OSError:
        runs = []
    for entry in runs:
        RunCgroup(0, {"": Path(entry.path)}, entry.name).destroy(timeout=2.0)
    try:
        os.rmdir(parent)
    except OSError:
        pass


def sweep_stale(base: Path) -> int:
    """Remove the ``srv-<pid>-<start>-*`` directories under ``base`` whose process is gone."""
    removed = 0
    try:
        entries = list(os.scandir(base))
    except OSError:
        return 0
    for entry in entries:
        parts = entry.name.split("-")
        if len(parts) != 4 or parts[0] != "srv" or not entry.is_dir(follow_symlinks=False):
            continue
        try:
            pid = int(parts[1])
        except ValueError:
            continue
        if _start_time(pid) == parts[2]:
            continue  # alive: another server's (or this process's other sandbox's) runs
        _remove_tree(Path(entry.path))
        removed += 1
    return removed


def _v2_dirs() -> dict[str, Path]:
    own = _own_paths()
    if "" not in own:
        raise CgroupUnavailable("no cgroup v2 membership")
    for root, point, fstype, _ in _mounts():
        if fstype != "cgroup2":
            continue
        here = _under(point, root, own[""])
        if here is None:
            continue
        available = set(_read(here / "cgroup.controllers").split())
        missing = [c for c in CONTROLLERS if c not in available]
        if missing:
            raise CgroupUnavailable(f"cgroup v2 at {point}: controller(s) {', '.join(missing)} not delegated to {here}")
        return {"": here}
    raise CgroupUnavailable("no cgroup v2 mount shows this process's cgroup")


def _enable_v2(d: Path) -> None:
    """Let ``d``'s children use the controllers (``d`` must hold no processes but the root's)."""
    wanted = " ".join(f"+{c}" for c in CONTROLLERS)
    try:
        _write(d / "cgroup.subtree_control", wanted)
    except OSError as exc:
        if exc.errno != errno.EBUSY:
            raise
        # "No internal processes": our own cgroup holds processes. When they
        # are all ours (a systemd unit with Delegate=yes), move them to a leaf.
        procs = {int(p) for p in _read(d / "cgroup.procs").split()}
        if procs - {os.getpid()}:
            raise CgroupUnavailable(f"{d} holds other processes; give toolrelay a delegated cgroup of its own (systemd: Delegate=yes)") from None
        leaf = d / "toolrelay-server"
        leaf.mkdir(exist_ok=True)
        _write(leaf / "cgroup.procs", str(os.getpid()))
        _write(d / "cgroup.subtree_control", wanted)


def _v1_dirs() -> dict[str, Path]:
    own = _own_paths()
    dirs: dict[str, Path] = {}
    for controller in CONTROLLERS:
        if controller not in own:
            raise CgroupUnavailable(f"no cgroup v1 {controller} hierarchy")
        for root, point, fstype, options in _mounts():
            if fstype == "cgroup" and controller in options:
                here = _under(point, root, own[controller])
                if here is not None:
                    dirs[controller] = here
                    break
        else:
            raise CgroupUnavailable(f"the cgroup v1 {controller} hierarchy is not mounted here")
    return dirs


def _make_parents(version: int, dirs: dict[str, Path]) -> dict[str, Path]:
    name = f"srv-{os.getpid()}-{_start_time(os.getpid())}-{next(_instances)}"
    parents: dict[str, Path] = {}
    try:
        for controller, here in dirs.items():
            if version == 2:
                _enable_v2(here)
            base = here / _PARENT
            base.mkdir(mode=0o755, exist_ok=True)
            if version == 2:
                _enable_v2(base)
            swept = sweep_stale(base)
            if swept:
                log.warning("removed %d stale sandbox cgroup(s) under %s", swept, base)
            mine = base / name
            mine.mkdir(mode=0o755)
            parents[controller] = mine
            if version == 2:
                _write(mine / "cgroup.subtree_control", " ".join(f"+{c}" for c in CONTROLLERS))
    except BaseException:
        for made in parents.values():
            _remove_tree(made)
        raise
    return parents


def _probe(pool: CgroupPool) -> None:
    """Move a real process into a run cgroup and check that it landed there, in every hierarchy."""
    run = pool.create(0, 64, 8)
    proc = subprocess.Popen(["/bin/cat"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={}, close_fds=True)
    try:
        run.join_tree(proc.pid)
        lines = _read(Path(f"/proc/{proc.pid}/cgroup")).splitlines()
        joined = [line for line in lines if line.endswith("/" + run.name)]
        if len(joined) < len(run.procs_files()):
            raise CgroupUnavailable(f"a process moved into {run.name} is not there: {lines}")
    finally:
        proc.kill()
        proc.wait()
        run.destroy()


def open_cgroups(cpu_cores: float) -> CgroupPool:
    """A working per-run cgroup pool (v2, else v1), or :class:`CgroupUnavailable` saying why."""
    reasons = []
    for version, find in ((2, _v2_dirs), (1, _v1_dirs)):
        pool: CgroupPool | None = None
        try:
            pool = CgroupPool(version, _make_parents(version, find()), cpu_cores)
            _probe(pool)
            return pool
        except (CgroupUnavailable, OSError, ValueError, subprocess.SubprocessError) as exc:
            reasons.append(f"v{version}: {exc}")
            if pool is not None:
                pool.close()
    raise CgroupUnavailable("; ".join(reasons))


@atexit.register
def _close_open_pools() -> None:
    for pool in list(_open_pools):
        if pool._owner == os.getpid():
            pool.close()
