"""Machinery shared by the process-based backends (bwrap, Landlock).

The child is started with ``subprocess.Popen`` in a worker thread (fork/exec
and the uid switch happen there, not on the event loop) and is then driven
entirely from the loop: its pipes are read non-blockingly with
``loop.add_reader`` under hard caps, its exit is observed through a pidfd,
and the wall clock is a ``loop.call_later``. No asyncio child watcher is
involved, so this works the same under uvloop.
"""

from __future__ import annotations

import abc
import asyncio
import collections
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .base import RunLimits, Sandbox
from .cgroup import CgroupPool, CgroupUnavailable, RunCgroup, open_cgroups
from .result import SandboxResult
from .settings import SandboxSettings

log = logging.getLogger("toolrelay.sandbox")

RUNNER_SOURCE = (Path(__file__).with_name("runner.py")).read_text(encoding="utf-8")
# The runner ends the run itself this long before the hard kill, so buffered
# output is flushed and the limit is named.
ALARM_MARGIN = 0.25
_DRAIN_SECONDS = 1.0


@dataclass(eq=False)
class Launch:
    """One started child and the server's ends of its pipes."""

    proc: subprocess.Popen[bytes]
    pidfd: int
    stdin: int
    outputs: dict[str, int]  # name -> read fd ("stdout", "stderr", "result", ...)
    uid: int | None
    started: float
    extra: dict[str, Any] = field(default_factory=dict)
    closers: list[Callable[[], None]] = field(default_factory=list)
    cgroup: RunCgroup | None = None


def pipe_pair() -> tuple[int, int]:
    r, w = os.pipe()  # O_CLOEXEC: only the fds a Popen names reach a child
    return r, w


def close_quietly(*fds: int | None) -> None:
    for fd in fds:
        if fd is not None and fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass


def python_problem(python: str) -> str | None:
    """Why ``python`` must not be the sandbox's interpreter, or None."""
    try:
        real = os.path.realpath(python, strict=True)
    except OSError:
        return f"interpreter {python} does not exist"
    if not os.access(real, os.X_OK):
        return f"interpreter {python} is not executable"
    # /usr is the only tree bound into (bwrap) or readable from (Landlock)
    # the sandbox, and holds no project files or secrets.
    if not real.startswith("/usr/"):
        return f"interpreter {python} resolves to {real}, outside /usr"
    if sys.prefix != sys.base_prefix and (real.startswith(sys.prefix + "/") or os.path.abspath(python).startswith(sys.prefix + "/")):
        return f"interpreter {python} is the server's own venv"
    return None


def pool_problem(settings: SandboxSettings) -> str | None:
    """Why the sandbox uid pool is unsafe to use, or None.

    The pool's uids get every process of theirs SIGKILLed (start-up sweep,
    Landlock's kill-by-uid) and share RLIMIT_NPROC with anything else running
    under them, so they must not belong to a real account.
    """
    import pwd

    base = settings.sandbox_uid_base
    for uid in range(base, base + settings.max_concurrent):
        try:
            name = pwd.getpwuid(uid).pw_name
        except KeyError:
            continue
        if not name.startswith("toolrelay"):  # dedicated users may be created on purpose
            return (
                f"sandbox uid {uid} belongs to the account {name!r}; set sandbox_uid_base to "
                f"{settings.max_concurrent} unused uids (or accounts named toolrelay*)"
            )
    return None


class _Slots:
    """A pool of slot numbers (each maps to its own uid) with a bounded wait."""

    def __init__(self, n: int) -> None:
        self._free: collections.deque[int] = collections.deque(range(n))
        self._waiters: collections.deque[asyncio.Future[int | None]] = collections.deque()

    async def acquire(self, timeout: float) -> int | None:
        if self._free and not self._waiters:
            return self._free.popleft()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[int | None] = loop.create_future()
        self._waiters.append(fut)
        timer = loop.call_later(timeout, lambda: fut.done() or fut.set_result(None))
        try:
            return await fut
        except asyncio.CancelledError:
            # Cancelled after a slot was handed over: give it back.
            if fut.done() and not fut.cancelled() and fut.result() is not None:
                self.release(fut.result())  # type: ignore[arg-type]
            raise
        finally:
            timer.cancel()
            try:
                self._waiters.remove(fut)
            except ValueError:
                pass

    def release(self, slot: int) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(slot)
                return
        self._free.append(slot)


class ProcessSandbox(Sandbox):
    """Slot handling, spawning, capped I/O, wall clock and result parsing."""

    def __init__(self, settings: SandboxSettings) -> None:
        super().__init__(settings)
        self._slots = _Slots(settings.max_concurrent)
        self._tasks: set[asyncio.Task[SandboxResult]] = set()
        # Spawning (fork/exec, uid switch) and clean-up block: they get their
        # own threads so a busy default executor cannot stall the sandbox.
        self._executor = ThreadPoolExecutor(max_workers=settings.max_concurrent + 1, thread_name_prefix=f"sandbox-{self.backend_name}")
        # Filled in by the selector's self-test.
        self.python_version: str | None = None
        self.self_test_ms: float | None = None
        # Set by prepare_limits(): per-run cgroups, or rlimits only.
        self._cgroups: CgroupPool | None = None
        self._limits_prepared = False
        self._no_cgroup_reason: str | None = None

    @property
    def enforcement(self) -> str:
        """How the run-wide limits are enforced: "cgroup2", "cgroup1" or "rlimit"."""
        return self._cgroups.mode if self._cgroups is not None else "rlimit"

    def enforcement_status(self) -> dict[str, Any]:
        """What bounds one run in total, as enforced here (docs/tools.md, "Limits")."""
        s = self.settings
        if self._cgroups is not None:
            return {"mode": self.enforcement, "memory_mb_total": s.memory_mb, "processes_total": s.nproc, "cpu_cores": s.cpu_cores}
        return {"mode": "rlimit", "memory_mb_total": s.memory_mb * s.nproc, "processes_total": s.nproc, "cpu_cores": None, "reason": self._no_cgroup_reason}

    def prepare_limits(self) -> str | None:
        """Set up per-run cgroups (or the rlimit fallback); a reason only when cgroups are required."""
        if not self._limits_prepared:
            self._limits_prepared = True
            if self.settings.cgroup == "off":
                self._no_cgroup_reason = 'disabled by configuration (sandbox cgroup "off")'
            else:
                try:
                    self._cgroups = open_cgroups(self.settings.cpu_cores)
                except CgroupUnavailable as exc:
                    self._no_cgroup_reason = str(exc)
            s = self.settings
            if self._cgroups is not None:
                log.info("sandbox limits: per-run %s (memory %d MiB, %d processes, %g CPUs per run)", self.enforcement, s.memory_mb, s.nproc, s.cpu_cores)
            elif s.cgroup != "require":
                log.warning(
                    "sandbox limits: no per-run cgroup (%s); falling back to per-process rlimits: "
                    "a run may use up to %d processes x %d MiB = %d MiB and all CPUs",
                    self._no_cgroup_reason,
                    s.nproc,
                    s.memory_mb,
                    s.nproc * s.memory_mb,
                )
        if self._cgroups is None and self.settings.cgroup == "require":
            return f'per-run cgroups are required (sandbox cgroup = "require") but unavailable: {self._no_cgroup_reason}'
        return None

    def status(self) -> dict[str, Any]:
        status = super().status()
        status.update(
            python=self.settings.python,
            python_version=self.python_version,
            self_test_ms=self.self_test_ms,
            running=self.running(),
            enforcement=self.enforcement_status(),
        )
        if os.geteuid() == 0:
            base = self.settings.sandbox_uid_base
            status["uids"] = [base, base + self.settings.max_concurrent - 1]
        return status

    def running(self) -> int:
        return len(self._tasks)

    async def blocking(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the sandbox's own threads."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    def close_cgroups(self) -> None:
        """Remove this sandbox's cgroup directories (runs in flight are killed)."""
        pool, self._cgroups = self._cgroups, None
        if pool is not None:
            pool.close()

    async def aclose(self) -> None:
        await self.blocking(self.close_cgroups)
        self._executor.shutdown(wait=False)

    # -- hooks -------------------------------------------------------------

    @abc.abstractmethod
    def unavailable_reason(self) -> str | None:
        """Why this backend cannot run here (checked before the self-test)."""

    @abc.abstractmethod
    def _spawn(self, slot: int, limits: RunLimits) -> Launch:
        """Start the child (runs in a worker thread)."""

    @abc.abstractmethod
    def _kill(self, launch: Launch) -> None:
        """Stop the run and everything it started; must not block."""

    async def _after_exit(self, launch: Launch) -> None:
        """Wait until nothing of the run survives; clean up host state."""

    def _merge_report(self, launch: Launch, reports: list[dict[str, Any]], res: SandboxResult) -> None:
        """Fold the JSON lines from the result fd into ``res``."""
        for rep in reports:
            if isinstance(rep.get("value"), str):
                res.value = rep["value"][: self.settings.value_chars]
            if isinstance(rep.get("exception"), str):
                res.exception = rep["exception"][:100]
            if isinstance(rep.get("limit"), str) and res.limit is None:
                res.limit = rep["limit"][:40]
            if isinstance(rep.get("setup_error"), str):
                res.error = "sandbox setup failed: " + rep["setup_error"][:500]

    # -- helpers for subclasses ---------------------------------------------

    def uid_for(self, slot: int) -> int | None:
        """The uid slot ``slot`` runs as, or None to keep the server's (non-root)."""
        if os.geteuid() == 0:
            return self.settings.sandbox_uid_base + slot
        return None

    def setpriv_problem(self) -> str | None:
        """Root only: the uid pool and the tool that switches to it."""
        if os.geteuid() != 0:
            return None
        problem = pool_problem(self.settings)
        if problem:
            return problem
        self._setpriv = shutil.which(self.settings.setpriv)
        if not self._setpriv:
            return f"setpriv ({self.settings.setpriv!r}) not found; install util-linux"
        return None

    def as_uid(self, uid: int | None, argv: list[str]) -> list[str]:
        """``argv`` run as ``uid`` with no supplementary groups (None: unchanged).

        setpriv's setresuid() away from 0 also clears every capability.
        """
        if uid is None:
            return argv
        setpriv = getattr(self, "_setpriv", None) or self.settings.setpriv
        return [setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--", *argv]

    def start_child(
        self,
        argv: list[str],
        child: dict[str, int],
        mine: dict[str, int],
        pass_fds: list[int],
        cwd: str,
        cleanup: Callable[[], None] = lambda: None,
        *,
        slot: int,
        limits: RunLimits,
    ) -> tuple[subprocess.Popen[bytes], int, float, RunCgroup | None]:
        """Start the sandbox's outermost process and pin it with a pidfd.

        Both backends start it the same way: an empty environment (bwrap's
        pid-1 helper would otherwise expose the server's), only the sandbox's
        own descriptors, a new session. With cgroups in use, a fresh run
        cgroup is made here and joined by ``_drive`` before the code is sent.
        The child's pipe ends are closed here whatever happens; on failure
        ours are too and ``cleanup`` runs.
        """
        cgroup: RunCgroup | None = None
        try:
            if self._cgroups is not None:
                try:
                    cgroup = self._cgroups.create(slot, limits.memory_mb, self.settings.nproc)
                except OSError as exc:
                    raise RuntimeError(f"cannot create the run's cgroup: {exc}") from None
        except BaseException:
            close_quietly(*mine.values(), *child.values())
            cleanup()
            raise
        undo = cleanup if cgroup is None else lambda: (cgroup.destroy(), cleanup())
        try:
            started = time.monotonic()
            proc = subprocess.Popen(
                argv,
                stdin=child["stdin"],
                stdout=child["stdout"],
                stderr=child["stderr"],
                pass_fds=pass_fds,
                close_fds=True,
                env={},
                cwd=cwd,
                start_new_session=True,
                umask=0o077,
            )
        except BaseException:
            close_quietly(*mine.values())
            undo()
            raise
        finally:
            close_quietly(*child.values())
        try:
            pidfd = os.pidfd_open(proc.pid)
        except OSError:
            proc.kill()
            proc.wait()
            close_quietly(*mine.values())
            undo()
            raise
        return proc, pidfd, started, cgroup

    def runner_args(self, result_fd: int, limits: RunLimits) -> list[str]:
        alarm = limits.wall_seconds - ALARM_MARGIN if limits.wall_seconds > 2 * ALARM_MARGIN else 0.0
        return [str(result_fd), str(self.settings.value_chars), str(self.settings.max_code_bytes), f"{alarm:.3f}"]

    # -- running -------------------------------------------------------------

    async def run(
        self,
        code: str,
        *,
        wall_seconds: float | None = None,
        cpu_seconds: float | None = None,
        memory_mb: int | None = None,
        output_bytes: int | None = None,
        queue_timeout_seconds: float | None = None,
    ) -> SandboxResult:
        limits = RunLimits.of(
            self.settings,
            wall_seconds=wall_seconds,
            cpu_seconds=cpu_seconds,
            memory_mb=memory_mb,
            output_bytes=output_bytes,
            queue_timeout_seconds=queue_timeout_seconds,
        )
        if not isinstance(code, str):
            return SandboxResult(error="code must be a string", backend=self.backend_name)
        payload = json.dumps({"code": code}).encode()
        if len(payload) > self.settings.max_code_bytes:
            return SandboxResult(
                error=f"code is too large ({len(payload)} bytes as JSON; the limit is {self.settings.max_code_bytes})", backend=self.backend_name
            )
        slot = await self._slots.acquire(limits.queue_timeout_seconds)
        if slot is None:
            return SandboxResult(
                error=f"sandbox busy: all {self.settings.max_concurrent} slots stayed in use for {limits.queue_timeout_seconds:g} s; try again later",
                backend=self.backend_name,
            )
        # The run lives in its own task so a cancelled caller still gets the
        # child killed and reaped before the slot (and its uid) is reused.
        task = asyncio.ensure_future(self._run_in_slot(slot, payload, limits))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            task.cancel()
            raise

    async def _run_in_slot(self, slot: int, payload: bytes, limits: RunLimits) -> SandboxResult:
        loop = asyncio.get_running_loop()
        try:
            spawn = loop.run_in_executor(self._executor, self._spawn, slot, limits)
            try:
                launch = await asyncio.shield(spawn)
            except asyncio.CancelledError:
                launch = await spawn
                try:
                    self._kill(launch)
                    await self._reap(launch)
                finally:
                    await self._cleanup(launch)
                raise
            except Exception as exc:  # noqa: BLE001 (any start failure becomes the tool's error result)
                return SandboxResult(error=f"sandbox failed to start: {exc}", backend=self.backend_name)
            try:
                return await self._drive(launch, payload, limits)
            finally:
                await self._cleanup(launch)
        finally:
            self._slots.release(slot)

    async def _cleanup(self, launch: Launch) -> None:
        loop = asyncio.get_running_loop()
        for fd in [launch.stdin, *launch.outputs.values()]:
            try:
                loop.remove_reader(fd)
                loop.remove_writer(fd)
            except (ValueError, OSError):
                pass
        close_quietly(launch.stdin, launch.pidfd, *launch.outputs.values())
        for closer in launch.closers:
            try:
                closer()
            except Exception:  # noqa: BLE001, S110 (best effort: one closer's failure must not skip the others)
                pass
        if launch.proc.returncode is None:  # only after a failure elsewhere
            self._kill(launch)
            await loop.run_in_executor(self._executor, launch.proc.wait)
        await self._after_exit(launch)
        cgroup, launch.cgroup = launch.cgroup, None
        if cgroup is not None and not await self.blocking(cgroup.destroy):
            log.warning("sandbox run cgroup %s could not be removed; swept at the next start", cgroup.name)

    async def _reap(self, launch: Launch) -> int:
        """Wait for the child's exit through its pidfd and reap it."""
        loop = asyncio.get_running_loop()
        exited: asyncio.Future[None] = loop.create_future()
        loop.add_reader(launch.pidfd, lambda: exited.done() or exited.set_result(None))
        try:
            await exited
        finally:
            loop.remove_reader(launch.pidfd)
        try:
            _, status, usage = os.wait4(launch.proc.pid, 0)  # noqa: ASYNC222 (the pidfd said it exited: returns at once)
        except ChildProcessError:  # reaped behind our back (a waitpid(-1) elsewhere)
            launch.proc.returncode = 255
            return 255
        launch.proc.returncode = os.waitstatus_to_exitcode(status)
        launch.extra["cpu_seconds"] = usage.ru_utime + usage.ru_stime
        return launch.proc.returncode

    async def _drive(self, launch: Launch, payload: bytes, limits: RunLimits) -> SandboxResult:
        loop = asyncio.get_running_loop()
        caps = {"stdout": limits.output_bytes, "stderr": limits.output_bytes}
        default_cap = self.settings.value_chars * 4 + 65536
        bufs: dict[str, bytearray] = {name: bytearray() for name in launch.outputs}
        truncated: dict[str, bool] = {name: False for name in launch.outputs}
        open_fds: dict[str, int] = dict(launch.outputs)
        all_eof = asyncio.Event()
        state: dict[str, Any] = {"limit": None, "killed": False, "done": False}

        def kill(reason: str | None) -> None:
            if state["killed"]:
                return
            state["killed"] = True
            state["limit"] = reason
            self._kill(launch)

        def on_readable(name: str) -> None:
            fd = open_fds.get(name)
            if fd is None:
                return
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                return
            except OSError:
                chunk = b""
            if not chunk:
                loop.remove_reader(fd)
                del open_fds[name]
                if not open_fds:
                    all_eof.set()
                return
            buf = bufs[name]
            room = caps.get(name, default_cap) - len(buf)
            if len(chunk) > room:
                buf += chunk[: max(room, 0)]
                truncated[name] = True
                loop.remove_reader(fd)
                del open_fds[name]
                if not open_fds:
                    all_eof.set()
                kill("output" if name in caps else None)
                return
            buf += chunk
            if name == "info":
                self._on_info(launch, bytes(buf))

        for name, fd in launch.outputs.items():
            os.set_blocking(fd, False)
            loop.add_reader(fd, on_readable, name)
        if not launch.outputs:
            all_eof.set()

        pending = memoryview(payload)

        def on_writable() -> None:
            nonlocal pending
            try:
                pending = pending[os.write(launch.stdin, pending) :]
            except BlockingIOError:
                return
            except OSError:  # the child closed stdin or died
                pending = pending[len(pending) :]
            if not pending:
                loop.remove_writer(launch.stdin)
                close_quietly(launch.stdin)
                launch.stdin = -1

        def send_code(joined: asyncio.Future[None] | None = None) -> None:
            if joined is not None and (joined.cancelled() or joined.exception() is not None):
                if not state["killed"]:
                    exc = None if joined.cancelled() else joined.exception()
                    state["setup_error"] = f"cannot move the run into its cgroup: {exc}"
                    kill(None)
                return
            if launch.stdin >= 0 and not state["killed"] and not state["done"]:
                loop.add_writer(launch.stdin, on_writable)

        os.set_blocking(launch.stdin, False)
        if launch.cgroup is None:
            send_code()
        else:
            # The code is sent only once the whole process tree is in the run
            # cgroup; the move overlaps the interpreter's start-up.
            cgroup, root = launch.cgroup, launch.proc.pid
            joining = loop.run_in_executor(self._executor, cgroup.join_tree, root)
            joining.add_done_callback(send_code)
        timer = loop.call_later(limits.wall_seconds, kill, "wall_time")
        try:
            await self._reap(launch)
            ended = time.monotonic()
            # Whatever is still in the pipes; bounded because every writer is
            # dead or dying once the child has been reaped.
            try:
                await asyncio.wait_for(all_eof.wait(), _DRAIN_SECONDS)
            except TimeoutError:
                pass
            for name in list(open_fds):
                on_readable(name)
        except asyncio.CancelledError:
            kill(None)
            await asyncio.shield(self._reap(launch))
            raise
        finally:
            timer.cancel()
            state["done"] = True
        res = SandboxResult(backend=self.backend_name)
        res.duration_ms = round((ended - launch.started) * 1000, 1)
        res.stdout = bytes(bufs.get("stdout", b"")).decode("utf-8", "replace")
        res.stderr = bytes(bufs.get("stderr", b"")).decode("utf-8", "replace")
        res.stdout_truncated = truncated.get("stdout", False)
        res.stderr_truncated = truncated.get("stderr", False)
        res.limit = state["limit"]
        if state.get("setup_error"):
            res.error = "sandbox setup failed: " + state["setup_error"][:500]
        reports = _parse_lines(bytes(bufs.get("result", b"")))
        self._merge_report(launch, reports, res)
        self._finish_result(launch, res, limits, got_report=any("value" in r for r in reports))
        return res

    def _on_info(self, launch: Launch, data: bytes) -> None:
        """bwrap's --info-fd JSON arrives here (other backends have none)."""

    def _finish_result(self, launch: Launch, res: SandboxResult, limits: RunLimits, *, got_report: bool) -> None:
        code = launch.proc.returncode
        if res.exit_code is None:
            res.exit_code = code
        if res.limit is None and launch.cgroup is not None and launch.cgroup.oom_kills():
            res.limit = "memory"  # the run cgroup's OOM killer ended a process of the run
        if res.limit is None and res.exit_code is not None and res.exit_code < 0:
            sig = -res.exit_code
            cpu = launch.extra.get("cpu_seconds", 0.0)
            if sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu >= limits.cpu_seconds * 0.9):
                res.limit = "cpu"
            elif sig == signal.SIGXFSZ:
                res.limit = "file_size"
        if not got_report and res.error is None and res.limit is None and res.exit_code not in (0, None):
            first = res.stderr.strip().splitlines()[:1]
            if first and first[0].startswith(("bwrap:", "prlimit:")):
                res.error = "sandbox setup failed: " + first[0][:500]


def _parse_lines(data: bytes) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for line in data.splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            out.append(obj)
    return out
