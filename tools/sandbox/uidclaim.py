"""Give each server process its own range of sandbox uids.

The sandbox kills every process of its pool uids (start-up sweep, wall-clock
kill by uid), so two processes sharing a pool would kill each other's runs:
several ``--workers``, or two servers on one host. Each process claims a
range with an exclusive ``flock`` held for its lifetime; the kernel drops the
lock when the process dies, so a crashed server never leaks its range.

Only root has a pool. The lock files used to be predictable names in /tmp,
created as root and following symlinks: any local user could plant a symlink
there (root then created or locked the file it named) or hold every lock so
the server could not start. They now live in a directory only we can enter:
``/run/toolrelay/sandbox-uids`` (host-wide, so servers with different data
directories still exclude each other), or ``<data dir>/sandbox-uids`` when
/run is unusable. The directory must be ours and mode 0700 (a looser mode on
our own directory is repaired, a foreign owner refused); lock files are
opened with ``O_NOFOLLOW`` relative to the checked directory's descriptor,
must be regular files we own, and are made 0600.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import stat
from pathlib import Path

import msgspec

from toolrelay.tools.sandbox.settings import SandboxSettings

log = logging.getLogger("toolrelay.sandbox")

_MAX_RANGES = 256
RUN_DIR = Path("/run/toolrelay")
_LOCK_SUBDIR = "sandbox-uids"


class UidClaimError(RuntimeError):
    """No uid range can be claimed safely; the message says why and what to do."""


class UidClaim:
    def __init__(self, settings: SandboxSettings, fd: int | None, lock_dir: Path | None = None) -> None:
        self.settings = settings
        self.lock_dir = lock_dir
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _open_private_dir(path: Path, *, parent_fd: int | None = None, repair: bool = True) -> int:
    """Create (0700) or open ``path`` without following a symlink; check it is ours and private.

    Any other owner is refused. A looser mode is repaired (``repair``) or,
    for a base directory that may hold other things, refused only when
    others can write it (they could swap the lock directory inside).
    """
    name: str | Path = path.name if parent_fd is not None else path
    try:
        os.mkdir(name, 0o700, dir_fd=parent_fd)
    except FileExistsError:
        pass
    try:
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UidClaimError(f"{path} is not a directory (a symlink or file was put there); remove it") from None
        raise
    st = os.fstat(fd)
    if st.st_uid != os.geteuid():
        os.close(fd)
        raise UidClaimError(
            f"{path} is owned by uid {st.st_uid}, not by this server (uid {os.geteuid()}): someone else could hold or swap the sandbox uid locks; remove it"
        )
    mode = stat.S_IMODE(st.st_mode)
    if repair and mode != 0o700:
        log.warning("%s had mode %o; set to 700", path, mode)
        os.fchmod(fd, 0o700)
    elif not repair and mode & 0o022:
        os.close(fd)
        raise UidClaimError(f"{path} is writable by other users (mode {mode:o})")
    return fd


def _lock_dir_fd(data_dir: Path | None, run_dir: Path) -> tuple[int, Path]:
    """The checked lock directory (descriptor and path): under /run, else the data directory."""
    problems = []
    candidates: list[Path] = [run_dir]
    if data_dir is not None:
        # The operator's own path: resolved once, then never followed again.
        candidates.append(Path(os.path.realpath(data_dir)))
    for base in candidates:
        try:
            base_fd = _open_private_dir(base, repair=False)
        except (OSError, UidClaimError) as exc:
            problems.append(f"{base}: {exc}")
            continue
        try:
            return _open_private_dir(base / _LOCK_SUBDIR, parent_fd=base_fd), base / _LOCK_SUBDIR
        except (OSError, UidClaimError) as exc:
            problems.append(f"{base / _LOCK_SUBDIR}: {exc}")
        finally:
            os.close(base_fd)
    raise UidClaimError("no safe directory for the sandbox uid locks: " + "; ".join(problems))


def _open_lock(dir_fd: int, name: str, directory: Path) -> int:
    """Open (creating 0600) the lock file ``name`` in the checked directory; never through a symlink."""
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK
    try:
        fd = os.open(name, flags, 0o600, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        # Only root can write our 0700 directory, but a symlink is never
        # followed: it is removed (its target is left alone) and replaced.
        log.warning("removed a symlink at the sandbox uid lock %s", directory / name)
        os.unlink(name, dir_fd=dir_fd)
        fd = os.open(name, flags | os.O_EXCL, 0o600, dir_fd=dir_fd)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
        os.close(fd)
        raise UidClaimError(f"{directory / name} is not a regular file owned by this server; remove it")
    if stat.S_IMODE(st.st_mode) != 0o600:
        os.fchmod(fd, 0o600)
    return fd


def claim_uid_range(settings: SandboxSettings, data_dir: Path | None = None, *, run_dir: Path = RUN_DIR) -> UidClaim:
    """Settings whose ``sandbox_uid_base`` starts a range no other live process holds.

    :class:`UidClaimError` when no safe lock directory exists or every range is held.
    """
    if os.geteuid() != 0:
        return UidClaim(settings, None)  # not root: runs keep the server's uid, no pool to share
    dir_fd, directory = _lock_dir_fd(data_dir, run_dir)
    size = settings.max_concurrent
    try:
        tried = 0
        for k in range(_MAX_RANGES):
            base = settings.sandbox_uid_base + k * size
            if base <= 65534 < base + size or base + size > 2**31:
                continue
            tried += 1
            fd = _open_lock(dir_fd, f"{base}-{size}.lock", directory)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            return UidClaim(msgspec.structs.replace(settings, sandbox_uid_base=base), fd, directory)
    finally:
        os.close(dir_fd)
    raise UidClaimError(
        f"all {tried} sandbox uid ranges of {size} uids from {settings.sandbox_uid_base} are held by other "
        f"processes (locks in {directory}): stop other toolrelay servers/workers on this host or set "
        "[sandbox] sandbox_uid_base to unused uids"
    )
