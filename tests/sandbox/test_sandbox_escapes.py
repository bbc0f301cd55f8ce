"""The escape suite, run against every backend this host supports.

Each case does what hostile code would try and asserts concretely, from
outside the sandbox where possible, that it failed. Every run is bounded by
the sandbox limits (small test limits, see conftest) and by RUN_TIMEOUT.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import sqlite3
import sys
import time
from pathlib import Path

import pytest

from .helpers import TEST_SETTINGS, marker_processes, output_of

MB = 1024 * 1024
PROJECT_DIR = Path(__file__).resolve().parents[2]


def report(result) -> dict:
    assert result.error is None, result.error
    assert result.exception is None, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


# -- the host's files --------------------------------------------------------


async def test_cannot_read_files_outside(sandbox, run, canary_dir):
    directory, token = canary_dir
    targets = [
        str(directory / "canary.txt"),
        str(PROJECT_DIR / "pyproject.toml"),
        sys.executable,  # the server's own interpreter / venv
        "/etc/shadow",
        "/etc/hostname",
        "/root/.bashrc",
        f"/proc/{os.getpid()}/environ",
        f"/proc/{os.getpid()}/root/etc/hostname",
    ]
    code = f"""
import json, os
out = {{}}
for path in {targets!r}:
    try:
        with open(path, "rb") as f:
            out[path] = f.read(4096).decode("latin-1")
    except Exception as e:
        out[path] = "denied:" + type(e).__name__
for d in [{str(directory)!r}, "/", "/tmp", "/etc", "/home", "/root"]:
    try:
        out["ls " + d] = sorted(os.listdir(d))
    except Exception as e:
        out["ls " + d] = "denied:" + type(e).__name__
print(json.dumps(out))
"""
    result = await run(sandbox, code)
    seen = report(result)
    assert token not in output_of(result)
    assert "[project]" not in output_of(result)
    for path in targets:
        assert seen[path].startswith("denied:"), (path, seen[path][:200])
    listings = {k: v for k, v in seen.items() if k.startswith("ls ")}
    assert listings[f"ls {directory}"].startswith("denied:")
    assert "canary.txt" not in json.dumps(list(listings.values()))
    # bwrap shows a synthetic passwd (also via /proc/1/root), Landlock none.
    passwd = await run(
        sandbox, "for p in ('/etc/passwd', '/proc/1/root/etc/passwd'):\n    try:\n        print(open(p).read())\n    except OSError as e:\n        print(p, e)"
    )
    assert "root:x:0:0" not in output_of(passwd)


async def test_cannot_read_server_environment(sandbox, run, monkeypatch):
    token = "envcanary-" + secrets.token_hex(12)
    monkeypatch.setenv("OPENAI_API_KEY", token)
    monkeypatch.setenv("TOOLRELAY_TEST_CANARY", token)
    code = """
import json, os
texts = {"os.environ": dict(os.environ)}
pids = []
try:
    pids = [p for p in os.listdir("/proc") if p.isdigit()]
except Exception as e:
    texts["ls /proc"] = type(e).__name__
for p in ["1", "self"] + pids:
    for name in ("environ", "cmdline"):
        try:
            texts[p + "/" + name] = open("/proc/%s/%s" % (p, name), "rb").read().decode("latin-1")
        except Exception as e:
            texts[p + "/" + name] = "denied:" + type(e).__name__
print(json.dumps(texts))
"""
    result = await run(sandbox, code)
    seen = report(result)
    assert token not in output_of(result)
    assert set(seen["os.environ"]) <= {"PATH", "HOME", "TMPDIR", "LANG", "PWD"}
    assert "OPENAI_API_KEY" not in output_of(result)


async def test_cannot_read_sqlite_database(sandbox, run, canary_dir):
    directory, token = canary_dir
    db = directory / "secrets.db"
    with sqlite3.connect(db) as conn:
        conn.execute("create table keys (value text)")
        conn.execute("insert into keys values (?)", (token,))
    db.chmod(0o644)
    code = f"""
import sqlite3
try:
    conn = sqlite3.connect("file:{db}?mode=ro", uri=True)
    print(conn.execute("select value from keys").fetchall())
except Exception as e:
    print("sqlite denied:", type(e).__name__)
try:
    print(open({str(db)!r}, "rb").read())
except Exception as e:
    print("raw denied:", type(e).__name__)
"""
    result = await run(sandbox, code)
    assert token not in output_of(result)
    assert "sqlite denied:" in result.stdout and "raw denied:" in result.stdout


async def test_inherited_descriptor_is_not_usable(sandbox, run, canary_dir):
    directory, token = canary_dir
    fd = os.open(directory / "canary.txt", os.O_RDONLY)
    os.set_inheritable(fd, True)  # no CLOEXEC: a careless spawn would leak it
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    os.set_inheritable(listener.fileno(), True)
    try:
        code = f"""
import os, json
found = {{}}
for n in range(3, 1024):
    try:
        os.fstat(n)
    except OSError:
        continue
    try:
        found[n] = os.pread(n, 200, 0).decode("latin-1")
    except OSError as e:
        found[n] = "unreadable:" + type(e).__name__
try:
    os.lseek({fd}, 0, 0)
    found["target"] = os.read({fd}, 200).decode("latin-1")
except OSError as e:
    found["target"] = "denied:" + type(e).__name__
print(json.dumps(found))
"""
        result = await run(sandbox, code)
        found = report(result)
        assert token not in output_of(result)
        assert found["target"].startswith("denied:")
        # Only the runner's own result pipe may be open besides 0, 1, 2.
        assert len([k for k in found if k != "target"]) <= 1, found
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):
            listener.accept()
    finally:
        os.close(fd)
        listener.close()


# -- the network and local IPC -------------------------------------------------


async def test_cannot_reach_host_sockets(sandbox, run, tmp_path):
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    tcp.listen()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    abstract_name = "\0toolrelay-test-" + secrets.token_hex(8)
    abstract = socket.socket(socket.AF_UNIX)
    abstract.bind(abstract_name)
    abstract.listen()
    sock_dir = Path("/tmp") / ("toolrelay-test-sock-" + secrets.token_hex(6))
    sock_dir.mkdir()
    sock_dir.chmod(0o777)
    path_stream = socket.socket(socket.AF_UNIX)
    path_stream.bind(str(sock_dir / "stream.sock"))
    path_stream.listen()
    path_dgram = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path_dgram.bind(str(sock_dir / "dgram.sock"))
    for p in sock_dir.iterdir():
        p.chmod(0o777)  # permissions are not what stops the sandbox
    try:
        code = f"""
import json, socket
out = {{}}
def attempt(name, fn):
    try:
        fn()
        out[name] = "connected"
    except Exception as e:
        out[name] = "blocked:" + type(e).__name__ + ":" + str(e)[:60]
def tcp():
    s = socket.create_connection(("127.0.0.1", {tcp.getsockname()[1]}), timeout=2)
    s.sendall(b"escaped")
def udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.sendto(b"escaped", ("127.0.0.1", {udp.getsockname()[1]}))
def abstract():
    s = socket.socket(socket.AF_UNIX)
    s.connect({abstract_name!r})
    s.sendall(b"escaped")
def path_stream():
    s = socket.socket(socket.AF_UNIX)
    s.connect({str(sock_dir / "stream.sock")!r})
    s.sendall(b"escaped")
def path_dgram():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.sendto(b"escaped", {str(sock_dir / "dgram.sock")!r})
def dns():
    socket.getaddrinfo("example.com", 80)
def netlink():
    socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)
def inet6():
    socket.socket(socket.AF_INET6, socket.SOCK_STREAM).connect(("::1", {tcp.getsockname()[1]}))
for name, fn in list(globals().items()):
    if name in ("tcp", "udp", "abstract", "path_stream", "path_dgram", "dns", "netlink", "inet6"):
        attempt(name, fn)
print(json.dumps(out))
"""
        result = await run(sandbox, code)
        out = report(result)
        assert len(out) == 8
        assert all(v.startswith("blocked:") for v in out.values()), out
        # And from the host's side: nothing arrived anywhere.
        for listener in (tcp, abstract, path_stream):
            listener.setblocking(False)
            with pytest.raises(BlockingIOError):
                listener.accept()
        for receiver in (udp, path_dgram):
            receiver.setblocking(False)
            with pytest.raises(BlockingIOError):
                receiver.recv(100)
    finally:
        for s in (tcp, udp, abstract, path_stream, path_dgram):
            s.close()
        for p in sock_dir.iterdir():
            p.unlink()
        sock_dir.rmdir()


# -- resources -----------------------------------------------------------------


async def test_fork_bomb_hits_process_limit(sandbox, run):
    code = """
import os, time
forks = 0
for _ in range(1000):
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        time.sleep(2)
        os._exit(0)
    forks += 1
print(forks)
"""
    started = time.monotonic()
    result = await run(sandbox, code)
    assert result.exception is None, result.stderr
    forks = int(result.stdout)
    assert 0 < forks <= TEST_SETTINGS.nproc
    assert time.monotonic() - started < 15  # the sleeping children did not hold the run


async def test_uncaught_fork_failure_reports_processes_limit(sandbox, run):
    result = await run(sandbox, "import os, time\nwhile True:\n    if os.fork() == 0:\n        time.sleep(5)\n")
    assert result.exception == "BlockingIOError"
    assert result.limit == "processes"


async def test_allocating_4_gb_fails(sandbox, run):
    result = await run(sandbox, "b = bytearray(4 * 1024**3)\nlen(b)")
    assert result.exception == "MemoryError"
    assert result.limit == "memory"
    assert result.value is None
    chunks = await run(
        sandbox,
        """
chunks = []
try:
    while True:
        chunks.append(bytearray(16 * 1024 * 1024))
except MemoryError:
    pass
print(len(chunks) * 16)
""",
    )
    assert int(chunks.stdout) <= TEST_SETTINGS.memory_mb  # MB actually obtained


async def test_busy_loop_is_killed_at_wall_time(sandbox, run):
    started = time.monotonic()
    result = await run(sandbox, "print('started', flush=True)\nwhile True:\n    pass", wall_seconds=2)
    assert result.limit == "wall_time"
    assert result.stdout == "started\n"
    # Killed by the wall clock: not before the 2 s limit, and long before the
    # endless loop could end on its own (wide bound: shared, noisy machines).
    assert result.duration_ms >= 1500
    assert time.monotonic() - started < 15


async def test_sleep_is_killed_at_wall_time(sandbox, run):
    started = time.monotonic()
    result = await run(sandbox, "import time\nprint('before')\ntime.sleep(3600)", wall_seconds=1.5)
    assert result.limit == "wall_time"
    assert "before" in result.stdout  # buffered output was flushed before the kill
    assert result.duration_ms >= 1000
    assert time.monotonic() - started < 15  # sleep(3600) would hold it for an hour


async def test_blocked_signal_handler_still_killed(sandbox, run):
    # The code disarms the runner's own alarm; the server's kill still ends it.
    code = "import signal, time\nsignal.setitimer(signal.ITIMER_REAL, 0)\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\ntime.sleep(3600)"
    started = time.monotonic()
    result = await run(sandbox, code, wall_seconds=1.5)
    assert result.limit == "wall_time"
    assert time.monotonic() - started < 15


async def test_cpu_limit(sandbox, run):
    started = time.monotonic()
    result = await run(sandbox, "while True:\n    pass", cpu_seconds=1, wall_seconds=5)
    assert result.limit == "cpu"  # the 1 s CPU limit fired, not the 5 s wall clock
    assert time.monotonic() - started < 15


async def test_writing_1_gb_is_capped(sandbox, run):
    one_file = await run(
        sandbox,
        """
chunk = b"x" * (1024 * 1024)
written = 0
with open("big", "wb") as f:
    for _ in range(1024):
        f.write(chunk)
        f.flush()
        written += 1
""",
    )
    assert one_file.limit == "file_size"
    assert one_file.exception == "OSError"
    many = await run(
        sandbox,
        """
import os
chunk = b"x" * (1024 * 1024)
for i in range(128):
    with open("part%d" % i, "wb") as f:
        for _ in range(8):
            f.write(chunk)
    print(i, flush=True)
""",
    )
    assert many.limit == "disk"
    written_mb = len(many.stdout.split()) * 8
    # bwrap: a hard tmpfs cap. Landlock: the supervisor polls the work dir
    # every 10 ms, so a page-cache-speed writer overshoots by tens of MB.
    slack = 0 if sandbox.backend_name == "bwrap" else 160
    assert written_mb <= TEST_SETTINGS.tmpfs_mb + slack
    hidden = await run(
        sandbox,
        """
import os
held = []
for i in range(64):
    f = open("h%d" % i, "wb")
    os.unlink("h%d" % i)          # deleted but open: invisible to a directory walk
    for _ in range(8):
        f.write(b"x" * (1024 * 1024))
    f.flush()
    held.append(f)
    print(i, flush=True)
import time
time.sleep(3)
""",
    )
    assert hidden.limit == "disk"
    assert len(hidden.stdout.split()) * 8 <= TEST_SETTINGS.tmpfs_mb + slack


async def test_only_scratch_dir_is_writable(sandbox, run):
    token = secrets.token_hex(8)
    targets = [
        "/escape-" + token,
        "/usr/escape-" + token,
        "/etc/escape-" + token,
        "/dev/shm/escape-" + token,
        "/tmp/escape-" + token,
        f"{PROJECT_DIR}/escape-{token}",
        "/var/tmp/escape-" + token,
    ]
    code = f"""
import json
out = {{}}
for path in {targets!r}:
    try:
        with open(path, "w") as f:
            f.write("x")
        out[path] = "written"
    except Exception as e:
        out[path] = "denied:" + type(e).__name__
with open("scratch.txt", "w") as f:
    f.write("ok")
out["scratch"] = open("scratch.txt").read()
print(json.dumps(out))
"""
    result = await run(sandbox, code)
    out = report(result)
    assert out.pop("scratch") == "ok"
    written_inside = [p for p, v in out.items() if v == "written"]
    # bwrap's /tmp is the sandbox's own tmpfs: writing there is expected.
    allowed = {"/tmp/escape-" + token} if sandbox.backend_name == "bwrap" else set()
    assert set(written_inside) <= allowed, out
    for path in targets:
        assert not os.path.exists(path), f"{path} appeared on the host"


async def test_huge_output_is_cut(sandbox, run):
    started = time.monotonic()
    result = await run(sandbox, "import sys\nfor _ in range(100):\n    sys.stdout.write('x' * (1024 * 1024))")
    assert result.limit == "output"
    assert result.stdout_truncated
    assert len(result.stdout) == TEST_SETTINGS.output_bytes
    assert time.monotonic() - started < 15
    err = await run(sandbox, "import sys\nsys.stderr.write('e' * (10 * 1024 * 1024))")
    assert err.limit == "output" and err.stderr_truncated
    assert len(err.stderr) == TEST_SETTINGS.output_bytes


async def test_setsid_double_fork_orphan_does_not_survive(sandbox, run):
    marker = f"3600.{secrets.randbelow(10**6):06d}"
    run.markers.append(marker)
    code = f"""
import os, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.closerange(0, 1024)
        os.execv("/usr/bin/sleep", ["sleep", "{marker}"])
    os._exit(0)
time.sleep(0.3)
print("parent exits")
"""
    result = await run(sandbox, code)  # asserts no marked or pool process is left
    assert result.stdout == "parent exits\n"
    assert marker_processes(marker) == []


async def test_orphan_survives_not_even_a_wall_kill(sandbox, run):
    marker = f"3601.{secrets.randbelow(10**6):06d}"
    run.markers.append(marker)
    code = f"""
import os, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execv("/usr/bin/sleep", ["sleep", "{marker}"])
    os._exit(0)
time.sleep(3600)
"""
    result = await run(sandbox, code, wall_seconds=1)
    assert result.limit == "wall_time"


# -- ctypes and privileged calls -------------------------------------------------


def syscall_numbers(*names: str) -> dict[str, int]:
    import pyseccomp

    return {n: pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, n) for n in names}


async def test_ctypes_privileged_calls_are_contained(sandbox, run):
    nr = syscall_numbers("bpf", "io_uring_setup", "keyctl", "memfd_create", "perf_event_open")
    code = f"""
import ctypes, json, os, signal
libc = ctypes.CDLL(None, use_errno=True)
out = {{}}
out["ids"] = [list(os.getresuid()), list(os.getresgid()), os.getgroups()]
out["setuid0"] = libc.setuid(0)
out["setgroups0"] = libc.setgroups(1, (ctypes.c_uint * 1)(0))
out["ptrace_parent"] = libc.ptrace(16, os.getppid(), 0, 0)    # PTRACE_ATTACH
out["ptrace_1"] = libc.ptrace(16, 1, 0, 0)
out["mount"] = libc.mount(b"none", b"/usr", b"tmpfs", 0, None)
out["unshare_user"] = libc.unshare(0x10000000)                # CLONE_NEWUSER
out["unshare_net"] = libc.unshare(0x40000000)
out["chroot"] = libc.chroot(b"/")
out["bpf"] = libc.syscall({nr["bpf"]}, 0, 0, 0)
out["io_uring"] = libc.syscall({nr["io_uring_setup"]}, 1, 0)
out["keyctl"] = libc.syscall({nr["keyctl"]}, 0, 0, 0)
out["memfd"] = libc.syscall({nr["memfd_create"]}, b"x", 0)
out["perf"] = libc.syscall({nr["perf_event_open"]}, 0, 0, -1, -1, 0)
try:
    os.kill({os.getpid()}, 0)   # the test process (signal 0: harmless if it worked)
    out["kill_server"] = "sent"
except OSError as e:
    out["kill_server"] = type(e).__name__
print(json.dumps(out))
"""
    result = await run(sandbox, code)
    out = report(result)
    uids, gids, groups = out.pop("ids")
    assert 0 not in uids and 0 not in gids and groups == []
    assert out.pop("kill_server") != "sent"
    assert all(v == -1 for v in out.values()), out


async def test_nested_sandbox_tools_fail(sandbox, run):
    code = """
import subprocess
for argv in (["unshare", "-U", "-r", "id"], ["/usr/bin/sudo", "id"], ["/usr/bin/su", "-c", "id"]):
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=3)
        print(argv[0], p.returncode, p.stdout.strip())
    except Exception as e:
        print(argv[0], "failed", type(e).__name__)
"""
    result = await run(sandbox, code)
    assert "uid=0" not in result.stdout
