"""What one sandboxed run hands back."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

# Values of SandboxResult.limit.
LIMITS = ("wall_time", "memory", "output", "cpu", "file_size", "disk", "processes", "open_files")


@dataclass(slots=True)
class SandboxResult:
    stdout: str = ""
    stderr: str = ""
    # repr() of the final expression (cut to value_chars), None if there was none.
    value: str | None = None
    # Negative for a signal, None when the run never started.
    exit_code: int | None = None
    # Which limit cut the run, one of LIMITS, or None.
    limit: str | None = None
    duration_ms: float = 0.0
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    # Type name of an exception the code raised (e.g. "ZeroDivisionError").
    exception: str | None = None
    # The run could not happen or the sandbox failed; the code's own errors
    # are in stderr/exception, not here.
    error: str | None = None
    backend: str = ""

    @property
    def ok(self) -> bool:
        return self.error is None and self.limit is None and self.exception is None and self.exit_code == 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
