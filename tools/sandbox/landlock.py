"""Landlock + seccomp backend, for hosts without user namespaces.

No namespaces: isolation comes from a Landlock domain (read+exec ``/usr``,
read/write a fresh per-run work dir and a few ``/dev`` nodes, nothing else:
no ``/proc``, ``/etc``, ``/tmp`` or home; TCP bind/connect denied; abstract
unix sockets and signals scoped to the domain), a seccomp filter that also
denies ``connect`` (Landlock does not mediate pathname unix sockets) and every
socket family but AF_UNIX, rlimits, an unprivileged pool uid when the server
is root, and a subreaper supervisor that kills every descendant. The
bootstrap doing this runs in the child (``landlock_boot.py``).

The work dir lives on the host file system, so its size cap is enforced by
the supervisor polling it (every 0.1 s), not by a tmpfs.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

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

BOOT_SOURCE = (Path(__file__).with_name("landlock_boot.py")).read_text(encoding="utf-8")
MIN_ABI = 6  # ABI 6 adds the abstract-unix-socket and signal scopes
_BACKSTOP_SECONDS = 3.0


def landlock_abi() -> int:
    """The kernel's Landlock ABI version, 0 when absent or disabled."""
    if not sys.platform.startswith("linux"):
        return 0
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        abi = libc.syscall(444, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    except (OSError, AttributeError):
        return 0
    return max(int(abi), 0)


_MS_NOSUID, _MS_NODEV, _MNT_DETACH = 2, 4, 2


def _libc() -> Any:
    import ctypes.util

    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def mount_tmpfs(path: str, size_mb: int, uid: int | None) -> bool:
    """Mount a size-capped tmpfs on ``path``; False where we may not (not root, a container)."""
    if os.geteuid() != 0:
        return False
    owner = uid if uid is not None else 0
    options = f"size={size_mb}m,mode=0700,uid={owner},gid={owner}".encode()
    try:
        return _libc().mount(b"tmpfs", path.encode(), b"tmpfs", _MS_NOSUID | _MS_NODEV, options) == 0
    except OSError:
        return False


def remove_workdir(path: str, mounted: bool) -> None:
    if mounted:
        try:
            _libc().umount2(path.encode(), _MNT_DETACH)
        except OSError:
            pass
    shutil.rmtree(path, ignore_errors=True)


class LandlockSandbox(ProcessSandbox):
    backend_name = "landlock"

    def __init__(self, settings: SandboxSettings, *, min_abi: int = MIN_ABI) -> None:
        super().__init__(settings)
        self._min_abi = max(min_abi, MIN_ABI)
        self._seccomp: bytes | None = None
        self._base: str | None = None
        self._made_base = False
        self._python = os.path.realpath(settings.python) if os.path.exists(settings.python) else settings.python

    def unavailable_reason(self) -> str | None:
        if not sys.platform.startswith("linux"):
            return "Landlock needs Linux"
        abi = landlock_abi()
        if abi < self._min_abi:
            return f"Landlock ABI {abi} is below {self._min_abi} (needs Linux >= 6.12 with landlock in the LSM list)"
        problem = python_problem(self.settings.python) or self.setpriv_problem()
        if problem:
            return problem
        try:
            os.close(os.pidfd_open(os.getpid()))
        except (OSError, AttributeError):
            return "pidfd_open is unavailable (Linux >= 5.3 needed)"
        if not os.path.exists(f"/proc/self/task/{threading.get_native_id()}/children"):
            return "/proc/<pid>/task/<tid>/children is missing (CONFIG_PROC_CHILDREN)"
        try:
            self._seccomp = build_filter(deny_connect=True)
        except Exception as exc:  # noqa: BLE001 (any failure of libseccomp disqualifies the backend)
            return f"cannot build the seccomp filter: {exc}"
        try:
            self._base = self._prepare_base()
        except OSError as exc:
            return f"cannot prepare the work dir base: {exc}"
        return self.prepare_limits()

    def _prepare_base(self) -> str:
        configured = getattr(self.settings, "workdir_base", None)
        if not configured:
            base = tempfile.mkdtemp(prefix="toolrelay-sandbox-")
            self._made_base = True
        else:
            base = os.path.abspath(configured)
            try:
                os.mkdir(base, 0o711)
                self._made_base = True
            except FileExistsError:
                pass
            st = os.lstat(base)
            # A pre-created base owned by someone else (e.g. in /tmp) could
            # be used to swap work dirs under us.
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
                raise OSError(f"{base} must be a directory owned by uid {os.geteuid()}, not group/world-writable")
        os.chmod(base, 0o711)  # noqa: S103 (no read or write for others:) pool uids traverse into their own run dir only
        return base

    async def aclose(self) -> None:
        if self._base and self._made_base:
            base = self._base
            await self.blocking(lambda: shutil.rmtree(base, ignore_errors=True))
        await super().aclose()

    def _spawn(self, slot: int, limits: RunLimits) -> Launch:
        if self._seccomp is None or self._base is None:
            raise RuntimeError("landlock backend used before its availability check")
        s = self.settings
        uid = self.uid_for(slot)
        workdir = os.path.join(self._base, f"run-{secrets.token_hex(8)}")
        os.mkdir(workdir, 0o700)
        if uid is not None:
            os.chown(workdir, uid, uid)
        # As root, a size-capped tmpfs makes the disk cap exact; the supervisor's
        # polling alone let a fast writer 60-200 MB past it (measured).
        mounted = mount_tmpfs(workdir, s.tmpfs_mb, uid)
        child: dict[str, int] = {}
        mine: dict[str, int] = {}
        try:
            child["seccomp"] = data_pipe(self._seccomp)
            for name in ("stdin", "stdout", "stderr", "result", "lifeline"):
                r, w = pipe_pair()
                if name in ("stdin", "lifeline"):
                    child[name], mine[name] = r, w
                else:
                    mine[name], child[name] = r, w
            cpu = max(1, round(limits.cpu_seconds))
            mb = 1024 * 1024
            cfg = {
                "result_fd": child["result"],
                "seccomp_fd": child["seccomp"],
                "lifeline_fd": child["lifeline"],
                "workdir": workdir,
                "uid_switched": uid is not None,
                "min_abi": self._min_abi,
                "wall_seconds": limits.wall_seconds,
                "disk_bytes": s.tmpfs_mb * mb,
                "rlimits": {
                    "RLIMIT_AS": [limits.memory_mb * mb] * 2,
                    "RLIMIT_CPU": [cpu, cpu + 1],
                    "RLIMIT_NPROC": [s.nproc] * 2,
                    "RLIMIT_FSIZE": [s.file_size_mb * mb] * 2,
                    "RLIMIT_NOFILE": [s.nofile] * 2,
                    "RLIMIT_CORE": [0, 0],
                },
                "runner": RUNNER_SOURCE,
                "runner_args": self.runner_args(child["result"], limits),
            }
            argv = self.as_uid(uid, [self._python, "-I", "-S", "-B", "-c", BOOT_SOURCE, json.dumps(cfg)])
        except BaseException:
            close_quietly(*mine.values(), *child.values())
            remove_workdir(workdir, mounted)
            raise
        proc, pidfd, started, cgroup = self.start_child(
            argv,
            child,
            mine,
            [child["seccomp"], child["result"], child["lifeline"]],
            cwd=workdir,
            cleanup=lambda: remove_workdir(workdir, mounted),
            slot=slot,
            limits=limits,
        )
        outputs = {k: mine[k] for k in ("stdout", "stderr", "result")}
        launch = Launch(
            proc=proc,
            pidfd=pidfd,
            stdin=mine["stdin"],
            outputs=outputs,
            uid=uid,
            started=started,
            cgroup=cgroup,
            extra={"workdir": workdir, "mounted": mounted, "lifeline": mine["lifeline"]},
        )
        launch.closers.append(lambda: close_quietly(launch.extra.pop("lifeline", None)))
        return launch

    def _kill(self, launch: Launch) -> None:
        # Closing the lifeline makes the supervisor kill every descendant and
        # exit; the backstop is for a supervisor that does not.
        close_quietly(launch.extra.pop("lifeline", None))
        if launch.proc.returncode is None and "backstop" not in launch.extra:
            loop = asyncio.get_running_loop()
            launch.extra["backstop"] = loop.call_later(_BACKSTOP_SECONDS, self._hard_kill, launch)

    def _hard_kill(self, launch: Launch) -> None:
        if launch.proc.returncode is not None:
            return
        try:
            signal.pidfd_send_signal(launch.pidfd, signal.SIGKILL)
            os.killpg(launch.proc.pid, signal.SIGKILL)
        except OSError:
            pass
        if launch.uid is not None:
            # Orphans of a killed supervisor: kill everything of the slot uid.
            uid = launch.uid
            asyncio.get_running_loop().run_in_executor(
                self._executor,
                lambda: subprocess.run(
                    self.as_uid(uid, [self._python, "-I", "-S", "-c", "import os; os.kill(-1, 9)"]),
                    env={},
                    close_fds=True,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    timeout=5,
                    check=False,
                ),
            )

    async def _after_exit(self, launch: Launch) -> None:
        handle = launch.extra.pop("backstop", None)
        if handle is not None:
            handle.cancel()
        workdir = launch.extra.pop("workdir", None)
        mounted = bool(launch.extra.pop("mounted", False))
        if workdir:
            await self.blocking(lambda: remove_workdir(workdir, mounted))

    def _merge_report(self, launch: Launch, reports: list[dict[str, Any]], res: SandboxResult) -> None:
        runner = [r for r in reports if not r.get("supervisor")]
        supervisor = [r for r in reports if r.get("supervisor")]
        super()._merge_report(launch, runner, res)
        for rep in supervisor:
            if isinstance(rep.get("exit_code"), int):
                res.exit_code = rep["exit_code"]
            if isinstance(rep.get("limit"), str) and res.limit is None:
                res.limit = rep["limit"][:40]
