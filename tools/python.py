"""The built-in ``python`` tool: runs model-written code in the sandbox.

The sandbox (``tools.sandbox``) is chosen once at start-up by
``select_sandbox``; this tool only formats what a run hands back into a
bounded text the model can read.
"""

from __future__ import annotations

from typing import Any

from .base import ToolContext, ToolResult
from .sandbox import Sandbox, SandboxResult

_LIMIT_TEXT = {
    "wall_time": "the wall-clock limit of {wall:g} s was reached",
    "cpu": "the CPU-time limit of {cpu:g} s was reached",
    "memory": "the memory limit of {mem} MB was reached",
    "output": "the output limit of {out} bytes was reached; the output is truncated",
    "file_size": "the file-size limit of {fsize} MB was reached",
    "disk": "the scratch-space limit of {disk} MB was reached",
    "processes": "the process limit ({nproc}) was reached",
    "open_files": "the open-file limit ({nofile}) was reached",
}


def _clip_middle(text: str, budget: int) -> str:
    if len(text) <= budget:
        return text
    head = budget * 2 // 3
    tail = max(budget - head, 0)
    omitted = len(text) - head - tail
    return f"{text[:head]}\n[... {omitted} characters omitted ...]\n{text[len(text) - tail :] if tail else ''}"


def _clip_tail(text: str, budget: int) -> str:
    # The end of stderr (the exception itself) matters most.
    if len(text) <= budget:
        return text
    return f"[... {len(text) - budget} characters omitted ...]\n{text[len(text) - budget :]}"


class PythonTool:
    name = "python"

    def __init__(self, sandbox: Sandbox, *, max_output_chars: int = 8000, queue_timeout_seconds: float | None = None) -> None:
        self.sandbox = sandbox
        self.max_output_chars = max(500, max_output_chars)
        s = sandbox.settings
        self._queue_timeout = queue_timeout_seconds if queue_timeout_seconds is not None else s.queue_timeout_seconds
        # Above the sandbox's own limits (wall clock, plus waiting for a free
        # slot), so the sandbox, not the agent's timeout, ends a run and
        # reports why.
        self.timeout = s.wall_seconds + self._queue_timeout + 2.0
        self.parameters: dict[str, Any] = {
            "type": "object",
            "properties": {
                "code": {
                    "type": "string",
                    "description": "Python source to run. Print results, or end with an expression whose value you want back.",
                },
            },
            "required": ["code"],
            "additionalProperties": False,
        }
        self.description = self._describe()

    def _describe(self) -> str:
        sb, s = self.sandbox, self.sandbox.settings
        if not sb.available:
            reason = getattr(sb, "reason", "no sandbox backend")
            return f"Python code execution is disabled on this server ({reason}). Calling this tool only returns an error; answer without running code."
        version = getattr(sb, "python_version", None)
        return (
            f"Run Python {version or '3'} code in an isolated sandbox and get back its stdout, "
            "stderr and the value of the final expression. Use it for calculations, data "
            "processing and checking things with code. Standard library only (no numpy, "
            "requests or other third-party packages), no network access, no access to the "
            "host's files. Every call starts a fresh interpreter: variables, imports and files "
            "do not persist between calls, so include everything the code needs. Scratch files "
            f"may be written in the current directory during a call (up to {s.tmpfs_mb} MB). "
            f"Limits per call: {s.wall_seconds:g} s, {s.memory_mb} MB of memory, "
            f"{s.output_bytes // 1024} KB of output. Print what you need, or end the code with "
            "an expression: its repr() is returned as the value."
        )

    async def run(self, arguments: dict[str, Any], context: ToolContext) -> ToolResult:
        code = arguments.get("code")
        if not isinstance(code, str) or not code.strip():
            return ToolResult.error("'code' must be a non-empty string of Python source")
        result = await self.sandbox.run(code, queue_timeout_seconds=self._queue_timeout)
        data = {
            "backend": result.backend or self.sandbox.backend_name,
            "exit_code": result.exit_code,
            "limit": result.limit,
            "duration_ms": result.duration_ms,
        }
        if result.error:
            return ToolResult(content=f"error: {result.error}", is_error=True, data=data)
        is_error = bool(result.limit or result.exception or result.exit_code != 0)
        return ToolResult(content=self.format(result), is_error=is_error, data=data)

    def format(self, result: SandboxResult) -> str:
        """Compact sections, bounded by ``max_output_chars`` in total (about)."""
        s = self.sandbox.settings
        # Room for the section labels, the "stopped:" line and clip markers, so
        # the whole text fits and the registry never has to cut its end.
        budget = max(300, self.max_output_chars - 400)
        value = _clip_middle(result.value, budget // 5) if result.value is not None else None
        left = budget - (len(value) if value else 0)
        stderr = _clip_tail(result.stderr, left // 3 if result.stdout else left)
        stdout = _clip_middle(result.stdout, max(left - len(stderr), 200))
        parts = []
        if stdout:
            parts.append("stdout:\n" + stdout.rstrip("\n"))
        if stderr:
            parts.append("stderr:\n" + stderr.rstrip("\n"))
        if value is not None:
            parts.append("value: " + value)
        if result.limit:
            template = _LIMIT_TEXT.get(result.limit, "the {name} limit was reached")
            parts.append(
                "stopped: "
                + template.format(
                    name=result.limit,
                    wall=s.wall_seconds,
                    cpu=s.cpu_seconds,
                    mem=s.memory_mb,
                    out=s.output_bytes,
                    fsize=s.file_size_mb,
                    disk=s.tmpfs_mb,
                    nproc=s.nproc,
                    nofile=s.nofile,
                )
            )
        elif result.exit_code not in (0, None) and not result.exception:
            parts.append(f"exit code: {result.exit_code}")
        if not parts:
            parts.append("(no output; print() something or end with an expression)")
        return "\n\n".join(parts)
