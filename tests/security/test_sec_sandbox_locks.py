"""Issue 10 item 10: the sandbox uid-range lock files, on the real file system.

They used to be predictable names in /tmp (``/tmp/toolrelay-sandbox-uids/
<base>-<size>.lock``), created by root with ``O_CREAT`` and following
symlinks: a local user could make root create or lock any file, or hold every
lock so the python tool never came up. Each test here plays that user.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from msgspec.structs import replace

from toolrelay.tools.sandbox.settings import SandboxSettings
from toolrelay.tools.sandbox.uidclaim import RUN_DIR, UidClaimError, claim_uid_range

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="only root has a sandbox uid pool to lock")

# Uids of their own (nothing runs under them here: only locks are taken).
SETTINGS = SandboxSettings(sandbox_uid_base=61800, max_concurrent=2)
NOBODY = 65534


def lock_path(run_dir: Path, base: int, size: int = 2) -> Path:
    return run_dir / "sandbox-uids" / f"{base}-{size}.lock"


def test_a_symlink_planted_at_the_lock_path_is_not_followed(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    claim_uid_range(SETTINGS, run_dir=run_dir).release()  # the directory exists, as after an earlier start
    victim = tmp_path / "victim.conf"
    victim.write_text("precious")
    victim.chmod(0o644)
    planted = lock_path(run_dir, SETTINGS.sandbox_uid_base)
    planted.unlink()
    planted.symlink_to(victim)
    dangling = lock_path(run_dir, SETTINGS.sandbox_uid_base + 2)
    dangling.symlink_to(tmp_path / "created-by-root")

    first = claim_uid_range(SETTINGS, run_dir=run_dir)
    second = claim_uid_range(SETTINGS, run_dir=run_dir)
    try:
        assert {first.settings.sandbox_uid_base, second.settings.sandbox_uid_base} == {61800, 61802}
        # The targets are untouched: not created, not locked, same content and mode.
        assert not (tmp_path / "created-by-root").exists()
        assert victim.read_text() == "precious"
        assert victim.stat().st_mode & 0o777 == 0o644
        with open(victim) as f:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)  # would raise if the claim had locked it
        for path in (planted, dangling):
            assert not path.is_symlink() and path.is_file()
            assert path.stat().st_mode & 0o777 == 0o600
    finally:
        first.release()
        second.release()


def test_a_lock_directory_with_a_loose_mode_is_repaired(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    (run_dir / "sandbox-uids").mkdir(parents=True)
    (run_dir / "sandbox-uids").chmod(0o777)
    claim = claim_uid_range(SETTINGS, run_dir=run_dir)
    try:
        assert claim.lock_dir == run_dir / "sandbox-uids"
        assert (run_dir / "sandbox-uids").stat().st_mode & 0o777 == 0o700
        assert lock_path(run_dir, claim.settings.sandbox_uid_base).stat().st_mode & 0o777 == 0o600
    finally:
        claim.release()


def test_a_lock_directory_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    (run_dir / "sandbox-uids").mkdir(parents=True, mode=0o700)
    os.chown(run_dir / "sandbox-uids", NOBODY, NOBODY)
    with pytest.raises(UidClaimError, match="owned by uid 65534"):
        claim_uid_range(SETTINGS, run_dir=run_dir)
    # With a data directory to fall back on, the locks go there instead.
    claim = claim_uid_range(SETTINGS, tmp_path / "data", run_dir=run_dir)
    try:
        assert claim.lock_dir == tmp_path / "data" / "sandbox-uids"
        assert (tmp_path / "data" / "sandbox-uids").stat().st_mode & 0o777 == 0o700
    finally:
        claim.release()


def test_a_world_writable_run_directory_is_not_used(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o777)
    run_dir.chmod(0o1777)  # like /tmp: anyone could swap the lock directory inside
    claim = claim_uid_range(SETTINGS, tmp_path / "data", run_dir=run_dir)
    try:
        assert claim.lock_dir == tmp_path / "data" / "sandbox-uids"
        assert not (run_dir / "sandbox-uids").exists()
    finally:
        claim.release()


def test_another_user_cannot_reach_the_locks(tmp_path: Path) -> None:
    setpriv = shutil.which("setpriv")
    if not setpriv:
        pytest.skip("setpriv (util-linux) is needed to act as another user")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    run_dir.chmod(0o755)
    claim = claim_uid_range(SETTINGS, run_dir=run_dir)
    try:
        tmp_path.chmod(0o755)
        probe = (
            "import fcntl, sys\n"
            "for path in sys.argv[1:]:\n"
            "    try:\n"
            "        f = open(path, 'a')\n"
            "        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
            "        print('held', path)\n"
            "    except OSError as exc:\n"
            "        print(type(exc).__name__)\n"
        )
        taken = lock_path(run_dir, claim.settings.sandbox_uid_base)
        free = lock_path(run_dir, claim.settings.sandbox_uid_base + 2)
        out = subprocess.run(
            [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--", "/usr/bin/python3", "-I", "-c", probe, str(taken), str(free)],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
            env={},
        )
        assert out.stdout.split() == ["PermissionError", "PermissionError"], out
        assert not free.exists()
    finally:
        claim.release()


def test_two_processes_get_different_ranges_from_the_default_location() -> None:
    settings = replace(SETTINGS, sandbox_uid_base=61820)
    code = (
        "import sys\n"
        "from toolrelay.tools.sandbox.settings import SandboxSettings\n"
        "from toolrelay.tools.sandbox.uidclaim import claim_uid_range\n"
        f"claim = claim_uid_range(SandboxSettings(sandbox_uid_base={settings.sandbox_uid_base}, max_concurrent=2))\n"
        "print(claim.settings.sandbox_uid_base, claim.lock_dir, flush=True)\n"
        "sys.stdin.read()\n"
    )
    root = Path(__file__).resolve().parents[2]
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=root, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        lines = [p.stdout.readline().split() for p in procs if p.stdout]
    finally:
        for p in procs:
            p.communicate("", timeout=30)
    bases = {int(line[0]) for line in lines}
    assert len(bases) == 2, lines
    assert all(Path(line[1]) == RUN_DIR / "sandbox-uids" for line in lines), lines
    assert (RUN_DIR / "sandbox-uids").stat().st_mode & 0o777 == 0o700


def test_all_ranges_held_is_a_clear_error(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    held = []
    try:
        with pytest.raises(UidClaimError, match=r"all 256 sandbox uid ranges .* are held"):
            for _ in range(257):
                held.append(claim_uid_range(SETTINGS, run_dir=run_dir))
        assert len(held) == 256
    finally:
        for claim in held:
            claim.release()
