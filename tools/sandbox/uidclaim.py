"""Give each server process its own range of sandbox uids.

The sandbox kills every process of its pool uids (start-up sweep, wall-clock
kill by uid), so two processes sharing a pool would kill each other's runs:
several ``--workers``, or two servers on one host. Each process claims a
range with an exclusive ``flock`` held for its lifetime; the kernel drops the
lock when the process dies, so a crashed server never leaks its range.
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
import tempfile
from pathlib import Path

from tools.sandbox.settings import SandboxSettings

_MAX_RANGES = 256


class UidClaim:
    def __init__(self, settings: SandboxSettings, fd: int | None) -> None:
        self.settings = settings
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def claim_uid_range(settings: SandboxSettings, lock_dir: Path | None = None) -> UidClaim:
    """Settings whose ``sandbox_uid_base`` starts a range no other live process holds."""
    if os.geteuid() != 0:
        return UidClaim(settings, None)  # not root: runs keep the server's uid, no pool to share
    directory = lock_dir or Path(tempfile.gettempdir()) / "toolrelay-sandbox-uids"
    directory.mkdir(mode=0o700, exist_ok=True)
    size = settings.max_concurrent
    for k in range(_MAX_RANGES):
        base = settings.sandbox_uid_base + k * size
        if base <= 65534 < base + size or base + size > 2**31:
            continue
        fd = os.open(directory / f"{base}-{size}.lock", os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return UidClaim(dataclasses.replace(settings, sandbox_uid_base=base), fd)
    raise RuntimeError(f"no free sandbox uid range of {size} uids above {settings.sandbox_uid_base}")
