"""Bootstrap of the Landlock backend: runs in the child, never in the server.

The server reads this file as text and starts it with the dedicated system
interpreter (``python3 -I -S -B -c <this> <config-json>``), already switched
to a pool uid when the server is root. It is stdlib + ctypes only.

Process layout::

    supervisor (this program; PR_SET_CHILD_SUBREAPER, not restricted)
      └─ child: rlimits → no_new_privs → Landlock → seccomp → runner.main()
           └─ whatever the code forks; orphans are re-parented to the supervisor

The supervisor enforces the wall clock, polls the work dir's disk use, and
when the child ends (or the server closes the lifeline pipe) kills every
descendant until none is left, then reports one JSON line on the result fd.
It refuses (setup_error, exit 97) to run as uid 0, with capabilities, without
Landlock ABI >= 6 or without seccomp.
"""

import ctypes
import json
import os
import select
import signal
import stat
import sys
import time

_SYS_CREATE_RULESET = 444  # same number on every architecture
_SYS_ADD_RULE = 445
_SYS_RESTRICT_SELF = 446
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
_PR_SET_SECCOMP = 22
_PR_GET_SECCOMP = 21
_PR_SET_CHILD_SUBREAPER = 36
_PR_SET_NO_NEW_PRIVS = 38
_SECCOMP_MODE_FILTER = 2

_FS_EXECUTE = 1 << 0
_FS_WRITE_FILE = 1 << 1
_FS_READ_FILE = 1 << 2
_FS_READ_DIR = 1 << 3
_FS_MAKE_CHAR = 1 << 6
_FS_MAKE_BLOCK = 1 << 11
_FS_REFER = 1 << 13  # ABI 2
_FS_TRUNCATE = 1 << 14  # ABI 3
_FS_IOCTL_DEV = 1 << 15  # ABI 5
_NET_BIND_TCP = 1 << 0
_NET_CONNECT_TCP = 1 << 1
_SCOPE_ABSTRACT_UNIX = 1 << 0
_SCOPE_SIGNAL = 1 << 1
# The work dir is walked this often; the fds of every descendant (for files
# deleted while open) every _FD_SCAN_EVERY-th time, as that costs more.
_POLL_SECONDS = 0.01
_FD_SCAN_EVERY = 10
_MAX_ENTRIES = 10000


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64), ("scoped", ctypes.c_uint64)]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


class SetupError(Exception):
    pass


def _libc():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    libc.prctl.restype = ctypes.c_int
    return libc


def _check(ret, what):
    if ret < 0:
        raise SetupError("%s failed: %s" % (what, os.strerror(ctypes.get_errno())))
    return ret


def main(cfg):
    result_fd = cfg["result_fd"]

    def report(obj):
        data = (json.dumps(obj) + "\n").encode()
        try:
            while data:
                data = data[os.write(result_fd, data) :]
        except OSError:
            pass

    try:
        libc = _libc()
        _refuse_privileges()
        abi = libc.syscall(_SYS_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(_CREATE_RULESET_VERSION))
        if abi < cfg["min_abi"]:
            raise SetupError("Landlock ABI %d < %d" % (max(abi, 0), cfg["min_abi"]))
        _check(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), "PR_SET_CHILD_SUBREAPER")
        with os.fdopen(cfg["seccomp_fd"], "rb") as f:
            bpf = f.read(1 << 20)
        if not bpf or len(bpf) % 8:
            raise SetupError("no seccomp program")
    except Exception as exc:
        report({"setup_error": str(exc)})
        os._exit(97)

    child = os.fork()
    if child == 0:
        try:
            os.close(cfg["lifeline_fd"])
            _restrict(cfg, libc, abi, bpf)
        except BaseException as exc:
            report({"setup_error": str(exc) or type(exc).__name__})
            os._exit(97)
        try:
            # Whatever the runner's code defines (no typing import: it slows the sandbox's start).
            namespace: dict = {"__name__": "sandbox_runner"}
            exec(compile(cfg["runner"], "/sandbox/runner.py", "exec"), namespace)
            namespace["main"](cfg["runner_args"])  # ends with os._exit
        finally:
            os._exit(70)  # never fall through into the supervisor's code

    try:
        verdict = _supervise(cfg, child)
    except BaseException:  # whatever happens, nothing may outlive the run
        verdict = "error"
    status = _kill_all(cfg["uid_switched"], child)
    code = os.waitstatus_to_exitcode(status) if status is not None else None
    report({"supervisor": True, "limit": verdict if verdict in ("wall_time", "disk") else None, "exit_code": code})
    os._exit(code if code is not None and code >= 0 else 128 + (-(code or 9)))


def _refuse_privileges():
    if 0 in os.getresuid() or 0 in os.getresgid() or 0 in os.getgroups():
        raise SetupError("refusing to run code as uid/gid 0")
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("CapEff:", "CapPrm:", "CapAmb:")) and int(line.split()[1], 16):
                raise SetupError("refusing to run code with capabilities")


def _restrict(cfg, libc, abi, bpf):
    import resource

    workdir = cfg["workdir"]
    os.environ.clear()
    os.environ.update({"PATH": "/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8"})
    os.chdir(workdir)
    for name, (soft, hard) in cfg["rlimits"].items():
        resource.setrlimit(getattr(resource, name), (soft, hard))

    _check(libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "PR_SET_NO_NEW_PRIVS")
    handled = (1 << 13) - 1
    if abi >= 2:
        handled |= _FS_REFER
    if abi >= 3:
        handled |= _FS_TRUNCATE
    if abi >= 5:
        handled |= _FS_IOCTL_DEV
    attr = _RulesetAttr(handled, _NET_BIND_TCP | _NET_CONNECT_TCP, _SCOPE_ABSTRACT_UNIX | _SCOPE_SIGNAL)
    ruleset = _check(libc.syscall(_SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)), ctypes.c_uint32(0)), "landlock_create_ruleset")
    read_exec = _FS_EXECUTE | _FS_READ_FILE | _FS_READ_DIR
    work = handled & ~(_FS_EXECUTE | _FS_MAKE_CHAR | _FS_MAKE_BLOCK | _FS_IOCTL_DEV)
    rules = [("/usr", read_exec), (workdir, work)]
    rules += [(dev, _FS_READ_FILE | _FS_WRITE_FILE) for dev in ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")]
    for path, access in rules:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        try:
            rule = _PathBeneath(access, fd)
            _check(
                libc.syscall(_SYS_ADD_RULE, ctypes.c_int(ruleset), ctypes.c_int(_RULE_PATH_BENEATH), ctypes.byref(rule), ctypes.c_uint32(0)),
                "landlock_add_rule " + path,
            )
        finally:
            os.close(fd)
    _check(libc.syscall(_SYS_RESTRICT_SELF, ctypes.c_int(ruleset), ctypes.c_uint32(0)), "landlock_restrict_self")
    os.close(ruleset)

    n = len(bpf) // 8
    filters = (_SockFilter * n).from_buffer_copy(bpf)
    prog = _SockFprog(n, ctypes.cast(filters, ctypes.POINTER(_SockFilter)))
    _check(libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0), "seccomp")

    # Trust but verify: both layers must be live before any user code runs.
    if libc.prctl(_PR_GET_SECCOMP, 0, 0, 0, 0) != _SECCOMP_MODE_FILTER:
        raise SetupError("seccomp filter not active")
    try:
        os.listdir("/")
    except PermissionError:
        pass
    else:
        raise SetupError("Landlock is not enforcing")
    fd = libc.socket(2, 1, 0)  # AF_INET, SOCK_STREAM
    if fd >= 0:
        os.close(fd)
        raise SetupError("seccomp does not block AF_INET")


def _supervise(cfg, child):
    pidfd = os.pidfd_open(child)
    lifeline = cfg["lifeline_fd"]
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    poller.register(lifeline, select.POLLIN)
    deadline = time.monotonic() + cfg["wall_seconds"]
    next_disk = time.monotonic() + _POLL_SECONDS
    polls, held = 0, 0
    while True:
        now = time.monotonic()
        if now >= deadline:
            return "wall_time"
        ready = {fd for fd, _ in poller.poll(max(0.0, min(deadline, next_disk) - now) * 1000)}
        if pidfd in ready:
            return None
        if lifeline in ready:
            return "killed"  # the server asked, or died
        if time.monotonic() >= next_disk:
            polls += 1
            if polls % _FD_SCAN_EVERY == 0:
                held = _deleted_open_bytes()
            if _dir_bytes(cfg["workdir"]) + held > cfg["disk_bytes"]:
                return "disk"
            next_disk = time.monotonic() + _POLL_SECONDS


def _descendants():
    """(parent, pid) of every live descendant, from /proc/<pid>/task/*/children."""
    found, todo = [], [os.getpid()]
    while todo:
        parent = todo.pop()
        try:
            tasks = os.listdir("/proc/%d/task" % parent)
        except OSError:
            continue
        for tid in tasks:
            try:
                with open("/proc/%d/task/%s/children" % (parent, tid)) as f:
                    kids = [int(k) for k in f.read().split()]
            except (OSError, ValueError):
                continue
            for kid in kids:
                found.append((parent, kid))
                todo.append(kid)
    return found


def _ppid(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _kill_tree():
    for parent, pid in _descendants():
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            continue
        try:
            # The pidfd pins the process; checking the parent after opening
            # it rules out a recycled pid belonging to someone else.
            if _ppid(pid) == parent:
                signal.pidfd_send_signal(fd, signal.SIGKILL)
        except OSError:
            pass
        finally:
            os.close(fd)


def _kill_all(uid_switched, child):
    """Kill and reap every descendant; return the direct child's wait status."""
    status = None
    while True:
        if uid_switched:
            # Every process of this dedicated uid except ourselves; atomic
            # with respect to fork, so nothing can slip through.
            try:
                os.kill(-1, signal.SIGKILL)
            except OSError:
                pass
        else:
            _kill_tree()
        try:
            pid, st = os.waitpid(-1, 0)
        except ChildProcessError:
            return status  # no child left: as subreaper, no descendant left
        if pid == child:
            status = st


def _dir_bytes(workdir):
    """Bytes used under the work dir (hard links counted once)."""
    seen, total, entries = set(), 0, 0
    todo = [workdir]
    while todo:
        path = todo.pop()
        try:
            it = os.scandir(path)
        except PermissionError:
            try:  # the code may chmod a dir to hide it; we own it
                os.chmod(path, 0o700)
                it = os.scandir(path)
            except OSError:
                return float("inf")
        except OSError:
            continue
        with it:
            for entry in it:
                entries += 1
                if entries > _MAX_ENTRIES:
                    return float("inf")
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    total += st.st_blocks * 512
                if stat.S_ISDIR(st.st_mode):
                    todo.append(entry.path)
    return total


def _deleted_open_bytes():
    """Bytes of regular files the descendants hold open after unlinking them."""
    seen, total = set(), 0
    for _, pid in _descendants():
        try:
            fds = os.listdir("/proc/%d/fd" % pid)
        except OSError:
            continue
        for fd in fds:
            try:
                st = os.stat("/proc/%d/fd/%s" % (pid, fd))
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode) and st.st_nlink == 0 and (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
