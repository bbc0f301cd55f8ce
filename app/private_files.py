"""The data directory and its files are private to the server's user (issue 10, item 16).

The data directory holds API key hashes, the usage ledger, every scope's
memories and paused agent runs; with the default umask they were 0644 files
in a 0755 directory, readable by every local user. Now:

- the data directory is created 0700; an existing one we own is tightened to
  0700 (with a warning saying so); one we do not own and cannot tighten is
  left alone with a warning;
- SQLite files are created 0600 *before* SQLite opens them (``os.open`` with
  mode 0600), so there is no moment where they are readable. SQLite gives
  the ``-wal``, ``-shm`` and ``-journal`` files the mode of the database
  file, and an existing database with looser modes (from an older version)
  is tightened, together with those side files.

No process-wide umask: it would race with other threads creating files (the
sandbox sets its own modes on purpose).
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger("toolrelay")

DIR_MODE = 0o700
FILE_MODE = 0o600
_SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


def secure_dir(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` (and missing parents) with mode 0700, or tighten it if we own it."""
    path = Path(path)
    if not path.exists():
        # Parents are created with the default mode: they may be shared
        # directories (/var/lib); only the data directory itself is ours.
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            path.mkdir(mode=DIR_MODE)
        except FileExistsError:
            pass  # another worker created it first: checked below
    info = path.stat()
    loose = stat.S_IMODE(info.st_mode) & 0o077
    if not loose:
        return path
    if info.st_uid == os.geteuid():
        os.chmod(path, stat.S_IMODE(info.st_mode) & ~0o077 | DIR_MODE)
        log.warning("data directory %s was accessible to other users (mode %o); set it to 700", path, stat.S_IMODE(info.st_mode))
    else:
        log.warning(
            "data directory %s is accessible to other users (mode %o) and owned by uid %d, not us: "
            "its files are created 600, but make the directory 700 yourself",
            path,
            stat.S_IMODE(info.st_mode),
            info.st_uid,
        )
    return path


def private_file(path: str | os.PathLike[str]) -> Path:
    """Make sure ``path`` exists with mode 0600 (created so, or tightened if we own it).

    For SQLite databases: call before ``sqlite3.connect``; an empty file is a
    valid new database. Side files (``-wal``, ``-shm``, ``-journal``) left by
    an earlier run are tightened too.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
    except OSError:
        # Read-only file, a symlink, or no permission: let SQLite open it its
        # own way and report what is wrong.
        return path
    try:
        _tighten(fd, path)
    finally:
        os.close(fd)
    for suffix in _SQLITE_SIDE_FILES:
        side = path.with_name(path.name + suffix)
        try:
            fd = os.open(side, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue  # absent (the usual case)
        try:
            _tighten(fd, side)
        finally:
            os.close(fd)
    return path


def _tighten(fd: int, path: Path) -> None:
    info = os.fstat(fd)
    if stat.S_IMODE(info.st_mode) & 0o077 and info.st_uid == os.geteuid():
        os.fchmod(fd, FILE_MODE)
