"""Start-up backend selection with an escape self-test; fails closed.

Each candidate (bwrap, then Landlock) must first pass its static checks and
then a ~1 s escape suite run through the real backend: a canary file outside
the sandbox, a canary variable in the server's environment (also looked for
in ``/proc/*/environ``), a canary TCP port on 127.0.0.1, a fork loop that must
hit RLIMIT_NPROC, output past the cap that must be cut, and no process left
behind. The first backend that passes is used; if none does, the tool is
disabled: there is no weaker fallback.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable

from .base import DisabledSandbox, Sandbox
from .bwrap import BwrapSandbox
from .landlock import LandlockSandbox
from .process import ProcessSandbox, pool_problem
from .settings import SandboxSettings

log = logging.getLogger("toolrelay.sandbox")

CANDIDATES: dict[str, Callable[[SandboxSettings], ProcessSandbox]] = {
    "bwrap": BwrapSandbox,
    "landlock": LandlockSandbox,
}
ALLOWED_ENV = frozenset({"PATH", "HOME", "TMPDIR", "LANG", "PWD"})
CANARY_ENV = "TOOLRELAY_SANDBOX_CANARY"

_PROBE = r"""
import json, os, socket
out = {}
try:
    out["file"] = open(%(path)r).read()
except Exception as e:
    out["file"] = type(e).__name__
out["env_keys"] = sorted(os.environ)
texts = []
try:
    pids = [p for p in os.listdir("/proc") if p.isdigit()]
except Exception:
    pids = []
for p in ["1", "self"] + pids:
    try:
        texts.append(open("/proc/%%s/environ" %% p, "rb").read().decode("utf-8", "replace"))
    except Exception:
        pass
out["proc_environ"] = texts
try:
    s = socket.create_connection(("127.0.0.1", %(port)d), timeout=1)
    s.sendall(b"escaped")
    out["tcp"] = "connected"
except Exception as e:
    out["tcp"] = type(e).__name__
forks = 0
for _ in range(%(fork_cap)d):
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        import time
        time.sleep(60)
        os._exit(0)
    forks += 1
out["forks"] = forks
print(json.dumps(out))
"""


async def self_test(sandbox: ProcessSandbox) -> str | None:
    """None if ``sandbox`` contains the canaries, else why it does not."""
    s = sandbox.settings
    token = secrets.token_hex(16)
    accepted: list[bytes] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(b"connection")
        writer.close()

    canary_dir = tempfile.mkdtemp(prefix="toolrelay-canary-")
    os.chmod(canary_dir, 0o755)  # noqa: S103 (readable to any uid on purpose: only the sandbox may hide it)
    canary = os.path.join(canary_dir, "canary.txt")
    with open(canary, "w") as f:  # noqa: ASYNC230 (once at startup, a few bytes)
        f.write(token)
    os.chmod(canary, 0o644)
    previous_env = os.environ.get(CANARY_ENV)
    os.environ[CANARY_ENV] = token
    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        hello = await sandbox.run("import sys\nprint('ready')\nsys.version.split()[0]", wall_seconds=5)
        if hello.error or hello.stdout != "ready\n" or not hello.value:
            return f"self-test run failed: {hello.error or hello.stderr.strip()[-300:] or hello}"
        sandbox.python_version = hello.value.strip("'")
        probe_code = _PROBE % {"path": canary, "port": port, "fork_cap": s.nproc + 32}
        cap = 4096
        probe, flood = await asyncio.gather(
            sandbox.run(probe_code, wall_seconds=5),
            sandbox.run(f"import sys\nsys.stdout.write('x' * {cap * 64})\nsys.stdout.flush()", wall_seconds=5, output_bytes=cap),
        )
        everything = probe.stdout + probe.stderr + (probe.value or "")
        if token in everything:
            return "self-test: a canary (file or environment) was readable inside the sandbox"
        if probe.error or probe.limit or probe.exception:
            return f"self-test probe failed: {probe.error or probe.limit or probe.stderr.strip()[-300:]}"
        import json

        report = json.loads(probe.stdout)
        if accepted or report.get("tcp") == "connected":
            return "self-test: the sandbox connected to 127.0.0.1"
        extra_env = set(report.get("env_keys", [])) - ALLOWED_ENV
        if extra_env:
            return f"self-test: unexpected environment variables inside: {sorted(extra_env)}"
        if not 0 < report.get("forks", 0) <= s.nproc:
            return f"self-test: fork loop made {report.get('forks')} processes (nproc is {s.nproc})"
        if flood.limit != "output" or not flood.stdout_truncated or len(flood.stdout) > cap:
            return f"self-test: output was not capped (limit={flood.limit}, {len(flood.stdout)} bytes)"
        survivors = await sandbox.blocking(lambda: pool_processes(s))
        if survivors:
            return f"self-test: {len(survivors)} sandbox processes survived their run"
        return None
    finally:
        server.close()
        if previous_env is None:
            os.environ.pop(CANARY_ENV, None)
        else:
            os.environ[CANARY_ENV] = previous_env
        shutil.rmtree(canary_dir, ignore_errors=True)


def pool_processes(settings: SandboxSettings) -> list[int]:
    """Live (non-zombie) pids owned by the sandbox uid pool; root only."""
    if os.geteuid() != 0:
        return []
    pool = range(settings.sandbox_uid_base, settings.sandbox_uid_base + settings.max_concurrent)
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}").st_uid not in pool:
                continue
            with open(f"/proc/{entry}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state not in ("Z", "X"):  # a zombie is dead; it only awaits its reaper
            found.append(int(entry))
    return found


def kill_pool_processes(settings: SandboxSettings) -> int:
    """SIGKILL every live process of the sandbox uid pool; root only.

    Left by a crashed earlier server (they would eat the slots' RLIMIT_NPROC
    budget and fail the self-test). The pool uids must be dedicated to this
    server: another instance sharing them would lose its runs.
    """
    import signal

    if os.geteuid() != 0 or pool_problem(settings):
        return 0
    killed = 0
    for _ in range(50):  # forks racing the sweep are caught by the next round
        pids = pool_processes(settings)
        if not pids:
            break
        pool = range(settings.sandbox_uid_base, settings.sandbox_uid_base + settings.max_concurrent)
        for pid in pids:
            try:
                fd = os.pidfd_open(pid)
            except OSError:
                continue
            try:
                # Checked after pinning the process: a recycled pid is skipped.
                if os.stat(f"/proc/{pid}").st_uid in pool:
                    signal.pidfd_send_signal(fd, signal.SIGKILL)
                    killed += 1
            except OSError:
                pass
            finally:
                os.close(fd)
        time.sleep(0.01)
    return killed


async def select_sandbox(settings: SandboxSettings | None = None) -> Sandbox:
    """Pick the first backend that passes its self-test, else a DisabledSandbox."""
    settings = settings or SandboxSettings()
    if settings.backend == "off":
        return DisabledSandbox('disabled by configuration (sandbox backend "off")', settings)
    names = list(CANDIDATES) if settings.backend == "auto" else [settings.backend]
    try:
        stale = await asyncio.get_running_loop().run_in_executor(None, kill_pool_processes, settings)
    except Exception:  # noqa: BLE001 (the self-test will still catch whatever is left
        stale = 0
    if stale:
        log.warning("killed %d stale processes of the sandbox uid pool", stale)
    reasons: list[str] = []
    for name in names:
        started = time.monotonic()
        sandbox: ProcessSandbox | None = None
        try:
            sandbox = CANDIDATES[name](settings)
            reason = await sandbox.blocking(sandbox.unavailable_reason)
            if reason is None:
                reason = await asyncio.wait_for(self_test(sandbox), 60)
        except Exception as exc:  # noqa: BLE001 (anything unexpected disqualifies the backend)
            reason = f"self-test crashed: {exc!r}"
        if reason is None and sandbox is not None:
            sandbox.self_test_ms = round((time.monotonic() - started) * 1000, 1)
            log.info("code sandbox: %s (self-test passed in %.0f ms)", name, sandbox.self_test_ms)
            return sandbox
        log.warning("code sandbox backend %s rejected: %s", name, reason)
        reasons.append(f"{name}: {reason}")
        if sandbox is not None:
            await sandbox.aclose()
    disabled = DisabledSandbox("; ".join(reasons) or "no sandbox backend", settings)
    log.warning("code execution disabled: %s", disabled.reason)
    return disabled
