"""Backend selection: the self-test, and failing closed."""

from __future__ import annotations

import sys
import tempfile

import pytest

from fakes.server import write_toml
from toolrelay.app.config import ConfigError, load_settings
from toolrelay.tools.base import ToolContext
from toolrelay.tools.python import PythonTool
from toolrelay.tools.sandbox import (
    UNAVAILABLE,
    BwrapSandbox,
    DisabledSandbox,
    SandboxSettings,
    select_sandbox,
    self_test,
)
from toolrelay.tools.sandbox import landlock as landlock_module
from toolrelay.tools.sandbox import selector as selector_module

from .helpers import TEST_SETTINGS, discard, make_sandbox

CTX = ToolContext(scope="test")


def settings(**changes) -> SandboxSettings:
    from msgspec.structs import replace

    return replace(TEST_SETTINGS, **changes)


async def assert_tool_unavailable(sandbox) -> None:
    tool = PythonTool(sandbox)
    assert "disabled" in tool.description
    result = await tool.run({"code": "print(1)"}, CTX)
    assert result.is_error
    assert UNAVAILABLE in result.content
    assert result.data and result.data["backend"] == "off"


def test_there_is_no_unsafe_backend():
    for value in ("unsafe", "subprocess", "none", "exec"):
        with pytest.raises(ValueError):
            SandboxSettings(backend=value)  # type: ignore[arg-type]


async def test_backend_off_disables_code_execution():
    sandbox = await select_sandbox(SandboxSettings(backend="off"))
    assert isinstance(sandbox, DisabledSandbox)
    assert sandbox.backend_name == "off" and not sandbox.available
    status = sandbox.status()
    assert status["backend"] == "off" and status["available"] is False
    assert "off" in status["reason"]
    result = await sandbox.run("print(1)")
    assert result.error == f"{UNAVAILABLE}: {sandbox.reason}"
    assert result.stdout == "" and result.exit_code is None
    await assert_tool_unavailable(sandbox)


async def test_fails_closed_when_no_backend_passes(monkeypatch):
    monkeypatch.setattr(landlock_module, "landlock_abi", lambda: 0)
    sandbox = await select_sandbox(settings(bwrap="/nonexistent/bin/bwrap"))
    assert isinstance(sandbox, DisabledSandbox)
    assert "bwrap:" in sandbox.reason and "not found" in sandbox.reason
    assert "landlock:" in sandbox.reason and "ABI 0" in sandbox.reason
    await assert_tool_unavailable(sandbox)


async def test_bwrap_hidden_from_path(monkeypatch):
    monkeypatch.setenv("PATH", tempfile.gettempdir() + "/no-such-dir")
    monkeypatch.setattr(landlock_module, "landlock_abi", lambda: 5)
    sandbox = await select_sandbox(settings(backend="auto"))
    assert isinstance(sandbox, DisabledSandbox)
    assert "bubblewrap" in sandbox.reason and "ABI 5" in sandbox.reason


async def test_explicit_backend_does_not_fall_back():
    sandbox = await select_sandbox(settings(backend="bwrap", bwrap="/nonexistent/bwrap"))
    assert isinstance(sandbox, DisabledSandbox)
    assert sandbox.reason.startswith("bwrap:")
    assert "landlock" not in sandbox.reason


@pytest.mark.parametrize("python", [sys.executable, "/usr/bin/no-such-python3"])
async def test_server_or_missing_interpreter_is_refused(python):
    sandbox = await select_sandbox(settings(python=python))
    assert isinstance(sandbox, DisabledSandbox)
    assert sandbox.reason.count(python) >= 1


@pytest.mark.parametrize("name", ["bwrap", "landlock"])
async def test_selects_backend_after_self_test(name):
    discard(make_sandbox(name))  # skips when the host cannot run it
    sandbox = await select_sandbox(settings(backend=name))
    try:
        assert sandbox.backend_name == name
        status = sandbox.status()
        assert status["backend"] == name and status["available"] is True
        assert status["limits"]["wall_seconds"] == TEST_SETTINGS.wall_seconds
        assert status["python_version"].startswith("3.")
        assert status["self_test_ms"] < 5000
        result = await sandbox.run("print('hi')")
        assert result.stdout == "hi\n" and result.backend == name
    finally:
        await sandbox.aclose()


async def test_auto_prefers_bwrap_then_landlock():
    discard(make_sandbox("bwrap"))
    sandbox = await select_sandbox(settings())
    assert sandbox.backend_name == "bwrap"
    await sandbox.aclose()
    discard(make_sandbox("landlock"))
    fallback = await select_sandbox(settings(bwrap="/nonexistent/bwrap"))
    try:
        assert fallback.backend_name == "landlock"
        assert "bwrap" not in fallback.status().get("reason", "")
    finally:
        await fallback.aclose()


class _LeakyFiles(BwrapSandbox):
    """A misconfigured bwrap: the host's /tmp (where the canary lives) is visible."""

    def _argv(self, limits, fds):
        argv = super()._argv(limits, fds)
        i = argv.index("--tmpfs")
        return [*argv[: i - 2], "--bind", "/tmp", "/tmp", *argv[i + 2 :]]


class _LeakyNetwork(BwrapSandbox):
    """A misconfigured bwrap: host network and no seccomp filter."""

    def unavailable_reason(self):
        reason = super().unavailable_reason()
        import pyseccomp

        allow_all = pyseccomp.SyscallFilter(pyseccomp.ALLOW)
        with tempfile.TemporaryFile() as f:
            allow_all.export_bpf(f)
            f.seek(0)
            self._seccomp = f.read()
        return reason

    def _argv(self, limits, fds):
        argv = super()._argv(limits, fds)
        i = argv.index("--unshare-all")
        return [*argv[: i + 1], "--share-net", *argv[i + 1 :]]


@pytest.mark.parametrize(("leaky", "expected"), [(_LeakyFiles, "canary"), (_LeakyNetwork, "127.0.0.1")])
async def test_self_test_rejects_a_leaky_sandbox(leaky, expected, monkeypatch):
    discard(make_sandbox("bwrap"))
    sandbox = leaky(TEST_SETTINGS)
    assert sandbox.unavailable_reason() is None
    reason = await self_test(sandbox)
    assert reason is not None and expected in reason
    # And the selector, offered only this backend, fails closed.
    monkeypatch.setattr(selector_module, "CANDIDATES", {"bwrap": leaky})
    chosen = await select_sandbox(settings(backend="bwrap"))
    assert isinstance(chosen, DisabledSandbox)
    assert expected in chosen.reason


def test_uid_pool_of_a_real_account_is_refused(monkeypatch):
    import pwd

    from toolrelay.tools.sandbox.process import pool_problem

    def accounts(name):
        def getpwuid(uid):
            if uid != TEST_SETTINGS.sandbox_uid_base:
                raise KeyError(uid)
            return pwd.struct_passwd((name, "x", uid, uid, "", "/home/" + name, "/bin/bash"))

        return getpwuid

    monkeypatch.setattr(pwd, "getpwuid", accounts("alice"))
    problem = pool_problem(TEST_SETTINGS)
    assert problem is not None and "'alice'" in problem
    monkeypatch.setattr(pwd, "getpwuid", accounts("toolrelay-sbx0"))  # dedicated accounts are fine
    assert pool_problem(TEST_SETTINGS) is None


def test_settings_refuse_nobody_in_pool():
    with pytest.raises(ValueError):
        SandboxSettings(sandbox_uid_base=65533, max_concurrent=2)


def test_settings_from_config_table(tmp_path):
    """The [sandbox] table is checked by the one loader: unknown keys and wrong types are refused."""

    def load(table):
        return load_settings(write_toml(tmp_path / "c.toml", {"sandbox": table}), environ={}).sandbox

    s = load({"backend": "bwrap", "wall_seconds": 5, "memory_mb": 256, "workdir_base": "/var/lib/toolrelay/sbx"})
    assert s.backend == "bwrap" and s.wall_seconds == 5.0 and s.memory_mb == 256
    assert load({}) == SandboxSettings()
    for bad in ({"wall_secs": 5}, {"memory_mb": "lots"}, {"memory_mb": 1.5}, {"backend": "unsafe"}, {"nproc": True}, {"wall_seconds": -1}):
        with pytest.raises(ConfigError, match="sandbox"):
            load(bad)
