"""bubblewrap backend: isolation, seccomp, resource limits and the runner's I/O protocol (docs/tools.md).

Every namespace unshared (net leaves only ``lo``), nested user namespaces
disabled, the code runs as pid 1 of its pid namespace so killing it tears
down every descendant, ``/usr`` read-only, ``/`` and ``/dev`` remounted
read-only, a size-capped ``/tmp`` tmpfs as the only writable place, a
synthetic ``/etc/passwd``, a seccomp filter, rlimits via ``prlimit``, and an
unprivileged uid from the slot pool when the server is root (kernel uid 0
ignores ``RLIMIT_NPROC``).

The command line is ``[setpriv --reuid U ...] prlimit ... -- bwrap ... --
python3 -I -S -B /sandbox/runner.py``, started with an empty environment and
only the sandbox's own pipes as file descriptors.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys

from .base import RunLimits
from .process import (
    RUNNER_SOURCE,
    Launch,
    ProcessSandbox,
    close_quietly,
    pipe_pair,
    python_problem,
)
from .result import SandboxResult
from .seccomp import build_filter, data_pipe
from .settings import SandboxSettings

_PASSWD = b"sandbox:x:65534:65534:sandbox:/tmp:/usr/sbin/nologin\n"
_GROUP = b"sandbox:x:65534:\n"
_MIN_VERSION = (0, 8, 0)  # --disable-userns


class BwrapSandbox(ProcessSandbox):
    backend_name = "bwrap"

    def __init__(self, settings: SandboxSettings) -> None:
        super().__init__(settings)
        self._bwrap = shutil.which(settings.bwrap)
        self._prlimit = shutil.which(settings.prlimit)
        self._seccomp: bytes | None = None
        self._python = os.path.realpath(settings.python) if os.path.exists(settings.python) else settings.python

    def unavailable_reason(self) -> str | None:
        if not sys.platform.startswith("linux"):
            return "bubblewrap needs Linux"
        if not self._bwrap:
            return f"bubblewrap ({self.settings.bwrap!r}) not found; install it: apt-get install bubblewrap"
        if not self._prlimit:
            return f"prlimit ({self.settings.prlimit!r}) not found; install util-linux"
        problem = self.setpriv_problem()
        if problem:
            return problem
        problem = python_problem(self.settings.python)
        if problem:
            return problem
        try:
            out = subprocess.run([self._bwrap, "--version"], env={}, capture_output=True, timeout=10, check=False).stdout.decode(errors="replace")
        except (OSError, subprocess.SubprocessError) as exc:
            return f"cannot run {self._bwrap}: {exc}"
        m = re.search(r"(\d+)\.(\d+)\.(\d+)", out)
        if not m or tuple(map(int, m.groups())) < _MIN_VERSION:
            return f"bubblewrap >= 0.8.0 is needed (for --disable-userns), found {out.strip()!r}"
        try:
            self._seccomp = build_filter(deny_connect=False)
        except Exception as exc:  # noqa: BLE001 (libseccomp missing or refusing: any failure disqualifies the backend)
            return f"cannot build the seccomp filter: {exc}"
        return self.prepare_limits()

    def _argv(self, limits: RunLimits, fds: dict[str, int]) -> list[str]:
        s = self.settings
        cpu = max(1, round(limits.cpu_seconds))
        return [
            self._prlimit or "prlimit",
            f"--as={limits.memory_mb * 1024 * 1024}",
            f"--cpu={cpu}:{cpu + 1}",
            f"--nproc={s.nproc}",
            f"--fsize={s.file_size_mb * 1024 * 1024}",
            f"--nofile={s.nofile}",
            "--core=0",
            "--",
            self._bwrap or "bwrap",
            "--unshare-all",
            "--unshare-user",
            "--disable-userns",
            "--as-pid-1",
            "--uid",
            "65534",
            "--gid",
            "65534",
            "--hostname",
            "sandbox",
            "--die-with-parent",
            "--new-session",
            "--cap-drop",
            "ALL",
            "--clearenv",
            "--setenv",
            "PATH",
            "/usr/bin:/bin",
            "--setenv",
            "HOME",
            "/tmp",
            "--setenv",
            "TMPDIR",
            "/tmp",
            "--setenv",
            "LANG",
            "C.UTF-8",
            "--ro-bind",
            "/usr",
            "/usr",
            "--symlink",
            "usr/lib",
            "/lib",
            "--symlink",
            "usr/lib64",
            "/lib64",
            "--symlink",
            "usr/bin",
            "/bin",
            "--symlink",
            "usr/sbin",
            "/sbin",
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--size",
            str(s.tmpfs_mb * 1024 * 1024),
            "--tmpfs",
            "/tmp",
            "--dir",
            "/etc",
            "--ro-bind-data",
            str(fds["passwd"]),
            "/etc/passwd",
            "--ro-bind-data",
            str(fds["group"]),
            "/etc/group",
            "--dir",
            "/sandbox",
            "--ro-bind-data",
            str(fds["runner"]),
            "/sandbox/runner.py",
            # bwrap's root and /dev are tmpfs without a size cap, writable by
            # the sandbox uid (measured): make /tmp the only writable place.
            "--remount-ro",
            "/dev",
            "--remount-ro",
            "/",
            "--info-fd",
            str(fds["info"]),
            "--seccomp",
            str(fds["seccomp"]),
            "--chdir",
            "/tmp",
            "--",
            self._python,
            "-I",
            "-S",
            "-B",
            "/sandbox/runner.py",
            *self.runner_args(fds["result"], limits),
        ]

    def _spawn(self, slot: int, limits: RunLimits) -> Launch:
        if self._seccomp is None:
            raise RuntimeError("bwrap backend used before its availability check")
        uid = self.uid_for(slot)
        child: dict[str, int] = {}
        mine: dict[str, int] = {}
        try:
            child["passwd"] = data_pipe(_PASSWD)
            child["group"] = data_pipe(_GROUP)
            child["runner"] = data_pipe(RUNNER_SOURCE.encode())
            child["seccomp"] = data_pipe(self._seccomp)
            for name in ("stdin", "stdout", "stderr", "result", "info"):
                r, w = pipe_pair()
                if name == "stdin":
                    child[name], mine[name] = r, w
                else:
                    mine[name], child[name] = r, w
            argv = self.as_uid(uid, self._argv(limits, child))
        except BaseException:
            close_quietly(*mine.values(), *child.values())
            raise
        proc, pidfd, started, cgroup = self.start_child(
            argv,
            child,
            mine,
            [child[k] for k in ("passwd", "group", "runner", "seccomp", "result", "info")],
            cwd="/",
            slot=slot,
            limits=limits,
        )
        outputs = {k: mine[k] for k in ("stdout", "stderr", "result", "info")}
        launch = Launch(proc=proc, pidfd=pidfd, stdin=mine["stdin"], outputs=outputs, uid=uid, started=started, cgroup=cgroup)
        launch.closers.append(lambda: close_quietly(launch.extra.pop("child_pidfd", None)))
        return launch

    def _on_info(self, launch: Launch, data: bytes) -> None:
        if "child_pidfd" in launch.extra or launch.proc.returncode is not None:
            return
        try:
            pid = int(json.loads(data)["child-pid"])
        except (ValueError, KeyError, TypeError):
            return  # not complete yet
        try:
            launch.extra["child_pidfd"] = os.pidfd_open(pid)
        except OSError:
            launch.extra["child_pidfd"] = None

    def _kill(self, launch: Launch) -> None:
        # Kill the namespace's pid 1 (its death takes every descendant with
        # it) and let bwrap reap it: killing bwrap first would re-parent the
        # dead pid 1 to the host's init, and a zombie still counts against
        # the slot uid's RLIMIT_NPROC until init gets round to reaping it.
        child = launch.extra.get("child_pidfd")
        if child is None:
            self._kill_bwrap(launch)
            return
        try:
            signal.pidfd_send_signal(child, signal.SIGKILL)
        except OSError:
            pass
        if launch.proc.returncode is None and "backstop" not in launch.extra:
            loop = asyncio.get_running_loop()
            launch.extra["backstop"] = loop.call_later(1.0, self._kill_bwrap, launch)

    def _kill_bwrap(self, launch: Launch) -> None:
        if launch.proc.returncode is not None:  # reaped: its pid/pgid may be reused
            return
        try:
            signal.pidfd_send_signal(launch.pidfd, signal.SIGKILL)
        except OSError:
            pass
        try:
            os.killpg(launch.proc.pid, signal.SIGKILL)
        except OSError:
            pass

    async def _after_exit(self, launch: Launch) -> None:
        handle = launch.extra.pop("backstop", None)
        if handle is not None:
            handle.cancel()
        # Return only once the pid namespace is gone (pid 1's exit implies it).
        child = launch.extra.get("child_pidfd")
        if child is None:
            return
        loop = asyncio.get_running_loop()
        gone = loop.create_future()
        loop.add_reader(child, lambda: gone.done() or gone.set_result(None))
        try:
            await asyncio.wait_for(gone, 5.0)
        except TimeoutError:
            pass
        finally:
            loop.remove_reader(child)

    def _finish_result(self, launch: Launch, res: SandboxResult, limits: RunLimits, *, got_report: bool) -> None:
        # bwrap reports a child killed by signal N as exit status 128 + N.
        code = launch.proc.returncode
        if not got_report and code is not None and 128 < code < 160:
            res.exit_code = -(code - 128)
        super()._finish_result(launch, res, limits, got_report=got_report)
