"""The Landlock bootstrap refuses to run code unless every layer is in place."""

from __future__ import annotations

import os

import pytest

from .helpers import discard, make_sandbox


@pytest.fixture
def landlock():
    sandbox = make_sandbox("landlock")
    yield sandbox
    discard(sandbox)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs a root server (uid switching)")
async def test_refuses_uid_0(landlock, monkeypatch):
    monkeypatch.setattr(landlock, "uid_for", lambda slot: None)  # "forget" to switch uid
    result = await landlock.run("import os\nprint('ran as', os.getuid())")
    assert result.error == "sandbox setup failed: refusing to run code as uid/gid 0"
    assert "ran as" not in result.stdout


async def test_refuses_without_required_abi(landlock, monkeypatch):
    monkeypatch.setattr(landlock, "_min_abi", 99)  # as if the kernel were too old
    result = await landlock.run("print('ran')")
    assert result.error is not None and "Landlock ABI" in result.error and "< 99" in result.error
    assert result.stdout == ""


async def test_refuses_without_seccomp(landlock, monkeypatch):
    monkeypatch.setattr(landlock, "_seccomp", b"")
    result = await landlock.run("print('ran')")
    assert result.error == "sandbox setup failed: no seccomp program"
    assert result.stdout == ""


def test_unavailable_below_abi_6(monkeypatch):
    from toolrelay.tools.sandbox import LandlockSandbox
    from toolrelay.tools.sandbox import landlock as landlock_module

    from .helpers import TEST_SETTINGS

    monkeypatch.setattr(landlock_module, "landlock_abi", lambda: 5)
    reason = LandlockSandbox(TEST_SETTINGS).unavailable_reason()
    assert reason is not None and "ABI 5" in reason


async def test_work_dir_is_private_and_removed(landlock, run):
    result = await run(landlock, "import os\nprint(os.getcwd())\noct(os.stat('.').st_mode & 0o777)")
    workdir = result.stdout.strip()
    assert result.value == "'0o700'"
    assert workdir.startswith(landlock._base)
    assert not os.path.exists(workdir)  # removed after the run
    assert oct(os.stat(landlock._base).st_mode & 0o777) == "0o711"
