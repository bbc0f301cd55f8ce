"""The ``Sandbox`` interface and the disabled (fail-closed) implementation."""

from __future__ import annotations

import abc
from dataclasses import dataclass, replace
from typing import Any

from .result import SandboxResult
from .settings import SandboxSettings

UNAVAILABLE = "code execution is unavailable on this host"


@dataclass(frozen=True, slots=True)
class RunLimits:
    """The limits of one run: the settings, optionally tightened per call."""

    wall_seconds: float
    cpu_seconds: float
    memory_mb: int
    output_bytes: int
    queue_timeout_seconds: float

    @classmethod
    def of(cls, settings: SandboxSettings, **overrides: float | int | None) -> RunLimits:
        base = cls(
            wall_seconds=settings.wall_seconds,
            cpu_seconds=settings.cpu_seconds,
            memory_mb=settings.memory_mb,
            output_bytes=settings.output_bytes,
            queue_timeout_seconds=settings.queue_timeout_seconds,
        )
        # A caller may only tighten: the operator's settings are the ceiling.
        changes = {k: type(getattr(base, k))(min(v, getattr(base, k))) for k, v in overrides.items() if v is not None and v > 0}
        return replace(base, **changes)


def limits_summary(settings: SandboxSettings) -> dict[str, Any]:
    return {
        "wall_seconds": settings.wall_seconds,
        "cpu_seconds": settings.cpu_seconds,
        "memory_mb": settings.memory_mb,
        "tmpfs_mb": settings.tmpfs_mb,
        "output_bytes": settings.output_bytes,
        "file_size_mb": settings.file_size_mb,
        "nproc": settings.nproc,
        "nofile": settings.nofile,
        "max_concurrent": settings.max_concurrent,
        "queue_timeout_seconds": settings.queue_timeout_seconds,
    }


class Sandbox(abc.ABC):
    """Runs untrusted Python code; one fresh, stateless sandbox per call."""

    backend_name: str = ""

    def __init__(self, settings: SandboxSettings) -> None:
        self.settings = settings

    @property
    def available(self) -> bool:
        return True

    @abc.abstractmethod
    async def run(
        self,
        code: str,
        *,
        wall_seconds: float | None = None,
        cpu_seconds: float | None = None,
        memory_mb: int | None = None,
        output_bytes: int | None = None,
        queue_timeout_seconds: float | None = None,
    ) -> SandboxResult:
        """Run ``code``; never raises for anything the code does.

        The keyword limits can only lower the configured ones.
        """

    def status(self) -> dict[str, Any]:
        return {"backend": self.backend_name, "available": self.available, "limits": limits_summary(self.settings)}

    async def aclose(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release host resources (threads, work dirs); runs in flight are not waited for."""


class DisabledSandbox(Sandbox):
    """What the selector returns when no backend is safe here: every run fails."""

    backend_name = "off"

    def __init__(self, reason: str, settings: SandboxSettings | None = None) -> None:
        super().__init__(settings or SandboxSettings(backend="off"))
        self.reason = reason

    @property
    def available(self) -> bool:
        return False

    async def run(self, code: str, **_: Any) -> SandboxResult:
        return SandboxResult(error=f"{UNAVAILABLE}: {self.reason}", backend=self.backend_name)

    def status(self) -> dict[str, Any]:
        return {"backend": "off", "available": False, "reason": self.reason, "limits": limits_summary(self.settings)}


__all__ = ["UNAVAILABLE", "DisabledSandbox", "RunLimits", "Sandbox"]
