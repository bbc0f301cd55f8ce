"""Constants and helpers shared by the sandbox tests (fixtures are in conftest)."""

from __future__ import annotations

import os
import shutil

from toolrelay.tools.sandbox import BwrapSandbox, LandlockSandbox, SandboxResult, SandboxSettings
from toolrelay.tools.sandbox.process import ProcessSandbox

# A uid range of its own, so a server running on the same host is not touched.
TEST_SETTINGS = SandboxSettings(
    wall_seconds=5.0,
    cpu_seconds=5.0,
    memory_mb=256,
    tmpfs_mb=32,
    file_size_mb=8,
    nproc=32,
    nofile=128,
    output_bytes=256 * 1024,
    max_concurrent=2,
    queue_timeout_seconds=60.0,
    sandbox_uid_base=61000,
)
BACKENDS: dict[str, type[ProcessSandbox]] = {"bwrap": BwrapSandbox, "landlock": LandlockSandbox}
RUN_TIMEOUT = 15.0


def marker_processes(marker: str) -> list[int]:
    """Pids whose command line contains ``marker``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if marker.encode() in f.read():
                    found.append(int(entry))
        except OSError:
            pass
    return found


def output_of(result: SandboxResult) -> str:
    return f"{result.stdout}\n{result.stderr}\n{result.value or ''}\n{result.error or ''}"


def make_sandbox(name: str, settings: SandboxSettings = TEST_SETTINGS) -> ProcessSandbox:
    """A backend instance, or skip the test with the reason this host cannot run it."""
    import pytest

    sandbox = BACKENDS[name](settings)
    reason = sandbox.unavailable_reason()
    if reason is not None:
        # CI sets TOOLRELAY_SANDBOX_REQUIRE=bwrap (comma list) so a broken
        # install fails the run instead of silently skipping the escape suite.
        if name in os.environ.get("TOOLRELAY_SANDBOX_REQUIRE", "").split(","):
            pytest.fail(f"{name} backend required but unavailable: {reason}")
        pytest.skip(f"{name} backend unavailable on this host: {reason}")
    return sandbox


def discard(sandbox: ProcessSandbox) -> None:
    """Remove the host state a backend made (the Landlock work-dir base, its cgroups)."""
    sandbox.close_cgroups()
    base = getattr(sandbox, "_base", None)
    if base and getattr(sandbox, "_made_base", False):
        shutil.rmtree(base, ignore_errors=True)
