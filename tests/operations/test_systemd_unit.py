"""The systemd unit of docs/deployment.md: it parses, and the sandbox works under what it does to the process.

``User=``, ``NoNewPrivileges=yes`` and ``CapabilityBoundingSet=`` make the
server a non-root process with ``no_new_privs`` set and no capabilities;
``setpriv`` does the same here, and the python tool must still run code in
bubblewrap through a real ``toolrelay serve`` (over HTTP, the OpenAI SDK as
the client). The options that would break bubblewrap are checked absent.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from fakes.server import relay_config, write_toml
from fakes.upstream import FakeUpstream, Reply
from operations.serve_process import free_port

REPO = Path(__file__).resolve().parents[2]
NOBODY = 65534


def _documented_unit() -> str:
    text = (REPO / "docs" / "deployment.md").read_text(encoding="utf-8")
    section = text.split("### systemd\n", 1)[1]
    found = re.search(r"```ini\n(.*?)```", section, re.S)
    assert found, "docs/deployment.md's systemd section has no ini block"
    return found.group(1)


def _directives(unit: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in unit.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            name, _, value = line.partition("=")
            out.setdefault(name.strip(), []).append(value.strip())
    return out


def test_the_unit_runs_unprivileged_and_sandboxed_without_what_breaks_bubblewrap() -> None:
    d = _directives(_documented_unit())
    assert d["User"] not in (["root"], ["0"]) and d["NoNewPrivileges"] == ["yes"] and d["CapabilityBoundingSet"] == [""]
    for option in ("ProtectSystem", "ProtectHome", "PrivateTmp", "RestrictAddressFamilies", "SystemCallFilter", "RestrictNamespaces"):
        assert option in d, option
    assert d["ProtectSystem"] == ["strict"]
    # bubblewrap unshares all seven namespaces, brings up lo over netlink, mounts and names its UTS namespace.
    assert set(d["RestrictNamespaces"][0].split()) == {"user", "mnt", "pid", "net", "ipc", "uts", "cgroup"}
    assert "AF_NETLINK" in d["RestrictAddressFamilies"][0].split()
    allowed = d["SystemCallFilter"][0].split()
    assert {"@system-service", "@mount", "sethostname"} <= set(allowed)
    denied = " ".join(d["SystemCallFilter"][1:])
    assert "@privileged" not in denied and "@mount" not in denied
    # Each of these makes every sandboxed run fail (docs/deployment.md says why).
    for breaking in ("ProtectKernelTunables", "ProtectKernelLogs", "ProtectHostname", "PrivateUsers"):
        assert breaking not in d, breaking


def test_the_documented_unit_parses() -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    unit = _documented_unit()
    executable = REPO / ".venv" / "bin" / "toolrelay"
    if not executable.exists():
        executable = Path(shutil.which("toolrelay") or "/usr/bin/env")
    # verify checks that ExecStart's program exists: this machine's install stands in for /opt/toolrelay.
    unit = unit.replace("/opt/toolrelay/venv/bin/toolrelay", str(executable))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "toolrelay.service"
        path.write_text(unit, encoding="utf-8")
        done = subprocess.run([analyze, "verify", "--man=no", str(path)], capture_output=True, text=True, timeout=60, check=False)
    # Unknown keys and bad values are only warnings (exit 0): any output is a finding.
    assert done.returncode == 0 and not done.stderr.strip() and not done.stdout.strip(), (done.stdout, done.stderr)


def _python_for(uid: int) -> list[str]:
    """A command line that starts ``toolrelay.app`` as ``uid``.

    As root the venv's interpreter may sit under /root (0700): the system
    Python of the same version reads the venv's packages instead.
    """
    if uid == os.geteuid():
        return [sys.executable, "-m", "toolrelay.app"]
    system = Path(f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}")
    if not system.exists():
        pytest.skip(f"no {system} for an unprivileged server")
    site_packages = next(p for p in sys.path if p.endswith("site-packages") and p.startswith(sys.prefix))
    boot = f"import runpy, site, sys; site.addsitedir({site_packages!r}); sys.argv[0] = 'toolrelay'; runpy.run_module('toolrelay.app', run_name='__main__')"
    return [str(system), "-c", boot]


@pytest.fixture
def unprivileged_dir() -> Iterator[Path]:
    """A directory the unprivileged server owns (pytest's are private to root)."""
    path = Path(tempfile.mkdtemp(prefix="toolrelay-unpriv-"))
    if os.geteuid() == 0:
        os.chown(path, NOBODY, NOBODY)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {name: value.strip() for name, _, value in (line.partition(":") for line in lines)}


def test_the_sandbox_runs_code_when_the_server_is_unprivileged_with_no_new_privs(fake: FakeUpstream, unprivileged_dir: Path, tmp_path: Path) -> None:
    if shutil.which("setpriv") is None or shutil.which("bwrap") is None:
        pytest.skip("needs setpriv (util-linux) and bwrap (bubblewrap)")
    uid = NOBODY if os.geteuid() == 0 else os.geteuid()
    tree: dict[str, Any] = relay_config(
        fake.base_url, unprivileged_dir / "data", agent={"max_wall_seconds": 60, "tool_timeout_seconds": 30}, sandbox={"backend": "bwrap", "wall_seconds": 10.0}
    )
    config = write_toml(unprivileged_dir / "toolrelay.toml", tree)
    if os.geteuid() == 0:
        os.chown(config, NOBODY, NOBODY)
    drop = ["--reuid", str(NOBODY), "--regid", str(NOBODY), "--clear-groups"] if os.geteuid() == 0 else []
    # What NoNewPrivileges=yes and an empty CapabilityBoundingSet= do.
    setpriv = ["setpriv", *drop, "--no-new-privs", "--bounding-set", "-all", "--inh-caps", "-all"]
    port = free_port()
    log_path = tmp_path / "toolrelay.log"
    # Not TIKTOKEN_CACHE_DIR either: in-process relays of earlier tests point it at their own (root-only) data directories.
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOOLRELAY_") and k != "TIKTOKEN_CACHE_DIR"} | {"HOME": str(unprivileged_dir)}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [*setpriv, *_python_for(uid), "serve", "--config", str(config), "--port", str(port)],
            cwd=unprivileged_dir,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    try:
        root = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, log_path.read_text(errors="replace")
            try:
                if httpx.get(root + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, log_path.read_text(errors="replace")
            time.sleep(0.2)
        status = _status(process.pid)
        assert status["NoNewPrivs"] == "1" and status["CapBnd"] == "0000000000000000", status
        assert status["Uid"].split()[0] == str(uid) != "0"
        sandbox = httpx.get(root + "/ready", timeout=15).json()["sandbox"]
        assert sandbox["available"] is True and sandbox["backend"] == "bwrap", sandbox

        code = "import os\nprint(sum(i * i for i in range(1000)), os.getuid())"

        def respond(body: dict[str, Any]) -> Reply:
            results = [m for m in body["messages"] if m.get("role") == "tool"]
            if not results:
                return Reply(tool_calls=[{"name": "python", "arguments": {"code": code}}])
            return Reply(content="sandbox said: " + str(results[-1]["content"]))

        fake.responder = respond
        with openai.OpenAI(base_url=root + "/v1", api_key="sk-none", max_retries=0, timeout=60) as client:
            answer = client.chat.completions.create(model="agent/fake-model", messages=[{"role": "user", "content": "run it"}])
        content = answer.choices[0].message.content or ""
        # Computed in the sandbox (the "model" never saw the number), as uid 65534 inside its user namespace.
        assert "332833500 65534" in content, content
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
