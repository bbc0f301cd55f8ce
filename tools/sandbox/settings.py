"""Limits and knobs of the code-execution sandbox (design.md section 5)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Literal

Backend = Literal["auto", "bwrap", "landlock", "off"]
BACKENDS: tuple[str, ...] = ("auto", "bwrap", "landlock", "off")
CgroupMode = Literal["auto", "require", "off"]
CGROUP_MODES: tuple[str, ...] = ("auto", "require", "off")


@dataclass(frozen=True, slots=True, kw_only=True)
class SandboxSettings:
    # There is deliberately no "unsafe"/"subprocess" value: if no isolating
    # backend passes its self-test the tool is disabled.
    backend: Backend = "auto"
    wall_seconds: float = 10.0
    memory_mb: int = 512
    # The only writable place inside (bwrap: a tmpfs; landlock: a per-run dir
    # whose total size the supervisor polls).
    tmpfs_mb: int = 64
    # Cap for stdout and for stderr, each; the run is killed when one overflows.
    output_bytes: int = 1_048_576
    max_concurrent: int = 2
    queue_timeout_seconds: float = 30.0
    # RLIMIT_CPU soft limit (hard = soft + 1); per process, so the wall clock
    # is the real bound once code forks.
    cpu_seconds: float = 10.0
    # RLIMIT_NPROC counts every process of the uid, hence one uid per slot;
    # with a run cgroup it is also the run's pids.max.
    nproc: int = 64
    # Per-run cgroup (v2, else v1) capping the run's total memory (memory_mb),
    # processes (nproc) and CPU (cpu_cores): rlimits alone are per process, and
    # a run forked 6 x 400 MB under a 512 MiB RLIMIT_AS (measured). "auto" falls
    # back to rlimits with a warning when no cgroup is writable; "require"
    # disables the tool instead; "off" never tries.
    cgroup: CgroupMode = "auto"
    # CPU time per wall-clock second for the whole run (cgroup cpu.max quota),
    # so a run's busy children cannot take every core from the server.
    cpu_cores: float = 1.0
    file_size_mb: int = 16
    nofile: int = 256
    # The interpreter run inside. Must live under /usr (the only tree bound
    # into the sandbox) and must never be the server's own venv.
    python: str = "/usr/bin/python3"
    # When the server runs as root, slot i runs as uid/gid base + i. These
    # uids must own no files and run no other processes.
    sandbox_uid_base: int = 60000
    # Executables looked up on PATH when not absolute; a missing one makes
    # the backend unavailable (the selector then fails closed).
    bwrap: str = "bwrap"
    prlimit: str = "prlimit"
    # Switches to the pool uid after exec, so the server is vfork()ed rather
    # than fork()ed (measured: 4 ms against 46 ms for a server with 1 GB RSS).
    setpriv: str = "setpriv"
    # Landlock per-run work dirs are created under this directory (None: a
    # fresh private directory under the system temp dir).
    workdir_base: str | None = None
    max_code_bytes: int = 256 * 1024
    # repr() of the final expression is cut to this many characters.
    value_chars: int = 10_000

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"sandbox backend must be one of {BACKENDS}, not {self.backend!r}")
        if self.cgroup not in CGROUP_MODES:
            raise ValueError(f"sandbox cgroup must be one of {CGROUP_MODES}, not {self.cgroup!r}")
        if not 0.01 <= self.cpu_cores <= 1024:
            raise ValueError("sandbox cpu_cores must be between 0.01 and 1024")
        for name in ("wall_seconds", "cpu_seconds", "queue_timeout_seconds"):
            if not getattr(self, name) > 0:
                raise ValueError(f"sandbox {name} must be > 0")
        for name in ("memory_mb", "tmpfs_mb", "output_bytes", "max_concurrent", "nproc",
                     "file_size_mb", "nofile", "max_code_bytes", "value_chars"):
            if getattr(self, name) < 1:
                raise ValueError(f"sandbox {name} must be >= 1")
        if self.sandbox_uid_base < 1000:
            raise ValueError("sandbox_uid_base must be >= 1000 (a system uid could own files)")
        if self.sandbox_uid_base <= 65534 < self.sandbox_uid_base + self.max_concurrent:
            raise ValueError("the sandbox uid pool must not include 65534 (nobody)")
        if self.sandbox_uid_base + self.max_concurrent > 2**31:
            raise ValueError("sandbox_uid_base is out of range")

    @classmethod
    def from_mapping(cls, table: dict[str, Any] | None) -> SandboxSettings:
        """Build from the config file's ``[sandbox]`` table (TOML / env values).

        Unknown keys and wrong types are errors, so a typo cannot silently
        loosen a limit.
        """
        table = dict(table or {})
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(table) - set(known))
        if unknown:
            raise ValueError(f"unknown sandbox setting(s): {', '.join(unknown)}")
        values: dict[str, Any] = {}
        for name, raw in table.items():
            default = getattr(cls(), name)
            if isinstance(default, bool) or isinstance(raw, bool):
                raise ValueError(f"sandbox.{name}: unexpected boolean")
            if isinstance(default, float) and isinstance(raw, (int, float)):
                values[name] = float(raw)
            elif isinstance(default, int) and isinstance(raw, int):
                values[name] = raw
            elif (isinstance(default, str) or default is None) and isinstance(raw, str):
                values[name] = raw
            else:
                raise ValueError(f"sandbox.{name}: expected {type(default).__name__}, got {raw!r}")
        return cls(**values)
