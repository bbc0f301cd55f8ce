"""The seccomp BPF program loaded inside the sandbox.

Built once with libseccomp (via pyseccomp) in the server and handed to the
child as raw bytes: bwrap loads it with ``--seccomp FD``, the Landlock
bootstrap with ``prctl(PR_SET_SECCOMP)``. The default action is ALLOW; the
list shrinks the kernel surface and blocks what namespaces alone do not:
the second of the sandbox's layers, after namespace isolation and before
resource limits (docs/tools.md lists what it refuses).
"""

from __future__ import annotations

import errno
import functools
import os
import socket
import tempfile

# Kernel surface no sandboxed program needs; EPERM so code sees a normal error.
DENIED = (
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "keyctl",
    "add_key",
    "request_key",
    "mount",
    "umount",
    "umount2",
    "pivot_root",
    "chroot",
    "unshare",
    "setns",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "open_by_handle_at",
    "name_to_handle_at",
    "syslog",
    "acct",
    "swapon",
    "swapoff",
    "reboot",
    "quotactl",
    "quotactl_fd",
    "fanotify_init",
    "lookup_dcookie",
    "vhangup",
    "fsopen",
    "fsmount",
    "fsconfig",
    "fspick",
    "open_tree",
    "move_mount",
    "mount_setattr",
    "clock_settime",
    "clock_adjtime",
    "settimeofday",
    "adjtimex",
    "stime",
    "ioperm",
    "iopl",
    "uselib",
    "kcmp",
    "pidfd_getfd",
    "mknod",
    "mknodat",
    "migrate_pages",
    "move_pages",
    "nfsservctl",
    "vm86",
    "vm86old",
    # Memory outside every cap: RLIMIT_AS does not count unmapped memfd or
    # SysV segment pages, nor do the tmpfs --size or the Landlock disk poll.
    "memfd_create",
    "memfd_secret",
    "shmget",
    "msgget",
    "semget",
)

_CLONE_NEW = (
    0x00000080,  # CLONE_NEWTIME
    0x00020000,  # CLONE_NEWNS
    0x02000000,  # CLONE_NEWCGROUP
    0x04000000,  # CLONE_NEWUTS
    0x08000000,  # CLONE_NEWIPC
    0x10000000,  # CLONE_NEWUSER
    0x20000000,  # CLONE_NEWPID
    0x40000000,  # CLONE_NEWNET
)
_TIOCSTI = 0x5412
_TIOCLINUX = 0x541C
_PRIO_PROCESS = 0
_IOPRIO_WHO_PROCESS = 1
_PR_SET_DUMPABLE = 4


def _syscall_nr(sc, name: str) -> int | None:
    nr = sc.resolve_syscall(sc.Arch.NATIVE, name)
    return nr if nr >= 0 else None  # not on this architecture


@functools.lru_cache(maxsize=4)
def build_filter(*, deny_connect: bool) -> bytes:
    """Return the BPF program. ``deny_connect`` is for the Landlock backend,
    where pathname unix sockets are otherwise reachable (Landlock ABI <= 7
    does not mediate them); with bwrap they are invisible anyway."""
    import pyseccomp as sc  # imported late: only the server needs libseccomp

    f = sc.SyscallFilter(sc.ALLOW)
    eperm = sc.ERRNO(errno.EPERM)

    def rule(action: int, name: str, *args) -> None:
        if _syscall_nr(sc, name) is not None:
            f.add_rule(action, name, *args)

    for name in DENIED:
        rule(eperm, name)
    # Only AF_UNIX: no TCP/UDP, netlink, packet or vsock sockets.
    rule(sc.ERRNO(errno.EAFNOSUPPORT), "socket", sc.Arg(0, sc.NE, socket.AF_UNIX))
    # clone3 passes its flags in memory seccomp cannot read; ENOSYS makes
    # glibc fall back to clone(), whose flags we can check.
    rule(sc.ERRNO(errno.ENOSYS), "clone3")
    for flag in _CLONE_NEW:
        rule(eperm, "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
    # Terminal injection (CVE-2017-5226); masked so high bits cannot dodge it.
    for req in (_TIOCSTI, _TIOCLINUX):
        rule(eperm, "ioctl", sc.Arg(1, sc.MASKED_EQ, 0xFFFFFFFF, req))
    # Calls that can reach other processes of the same uid (the server, when
    # it is not root and Landlock runs code under its uid): only "self" allowed.
    for name in ("prlimit64", "sched_setaffinity", "sched_setparam", "sched_setscheduler", "sched_setattr"):
        rule(eperm, name, sc.Arg(0, sc.NE, 0))
    rule(eperm, "setpriority", sc.Arg(0, sc.NE, _PRIO_PROCESS))
    rule(eperm, "setpriority", sc.Arg(1, sc.NE, 0))
    rule(eperm, "ioprio_set", sc.Arg(0, sc.NE, _IOPRIO_WHO_PROCESS))
    rule(eperm, "ioprio_set", sc.Arg(1, sc.NE, 0))
    # A non-dumpable process hides /proc/<pid>/fd from the Landlock
    # supervisor, which counts deleted-but-open files there.
    rule(eperm, "prctl", sc.Arg(0, sc.EQ, _PR_SET_DUMPABLE))
    if deny_connect:
        rule(eperm, "connect")
        # A datagram can be sent to a pathname socket without connect().
        rule(eperm, "sendto", sc.Arg(4, sc.NE, 0))
        rule(eperm, "sendmsg")
        rule(eperm, "sendmmsg")

    with tempfile.TemporaryFile() as out:
        f.export_bpf(out)
        out.seek(0)
        data = out.read()
    if not data or len(data) % 8:
        raise RuntimeError("libseccomp produced an invalid BPF program")
    return data


def data_pipe(data: bytes) -> int:
    """A pipe read end preloaded with ``data`` (for bwrap's ``--*-data FD``).

    The caller passes it to exactly one child and closes it afterwards.
    """
    r, w = os.pipe()
    try:
        if len(data) > 65536:
            import fcntl

            fcntl.fcntl(w, 1031, len(data))  # F_SETPIPE_SZ
        view = memoryview(data)
        while view:
            view = view[os.write(w, view) :]
    except BaseException:
        os.close(r)
        raise
    finally:
        os.close(w)
    return r
