"""The set of built-in tools, and the one way they are called.

Every call goes through :meth:`ToolRegistry.call`: the model's argument
string is parsed and validated against the tool's JSON Schema before the tool
runs, the tool's timeout is enforced, exceptions and malformed output are
turned into an error result, and the text is capped. Whatever goes wrong, the
model gets a readable result it can correct itself from; the run goes on.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import anyio
import orjson
from jsonschema import validators

from toolrelay.tools.base import Source, Tool, ToolContext, ToolResult, tool_schema

log = logging.getLogger("toolrelay.tools")


@dataclass(slots=True)
class ToolOutcome:
    """The result of one call as the loop and the step records see it."""

    name: str
    status: str  # ok | error | timeout | invalid_arguments | unknown_tool
    content: str
    duration_ms: float
    arguments: Any = None
    truncated: bool = False
    data: dict[str, Any] | None = None
    sources: list[Source] = field(default_factory=list)
    images: tuple[str, ...] = ()


def _truncate(text: str, limit: int) -> tuple[str, bool]:
    """Cut the middle, not the end: the end of an output (a result, a traceback) matters as much as its start."""
    if len(text) <= limit:
        return text, False
    tail = limit // 4
    head = limit - tail
    return text[:head] + f"\n[output truncated: {len(text) - limit} characters omitted]\n" + text[len(text) - tail :], True


# A whole argument that is a template slot, not a value: "{{code}}", "{code}",
# "<url>", "${query}", "...". Measured: SmolLM2-135M forced to call python wrote
# the code "{{code}}".
_PLACEHOLDER = re.compile(r"\{\{.*\}\}|\{\s*[A-Za-z_]\w*\s*\}|<[A-Za-z_][\w -]{0,39}>|\$\{[^}]*\}|\.\.\.|…", re.DOTALL)


def _normalized(text: str) -> str:
    return " ".join(text.split()).strip(" .").casefold()


def copied_from_schema(parameters: dict[str, Any], arguments: dict[str, Any]) -> str | None:
    """Why ``arguments`` hold no real values (a placeholder, the schema's own description), or None.

    Small models fill a forced call from the text they were shown: the
    schema. Measured: SmolLM2-135M saved "The fact to remember, as one
    self-contained sentence." as a memory. Such a call must not run.
    """
    properties = parameters.get("properties") or {}
    for key, value in arguments.items():
        if not isinstance(value, str):
            continue
        if _PLACEHOLDER.fullmatch(value.strip()):
            return f"'{key}' is a template placeholder ({value.strip()[:60]!r}), not a value"
        spec = properties.get(key)
        description = spec.get("description") if isinstance(spec, dict) else None
        if isinstance(description, str) and _normalized(value) and _normalized(value) == _normalized(description):
            return f"'{key}' repeats the schema's description of the argument instead of a value"
    return None


class ToolRegistry:
    def __init__(
        self,
        tools: Iterable[Tool] = (),
        *,
        max_output_chars: int = 16_000,
        default_timeout: float = 60.0,
        on_outcome: Callable[[str, str, float], None] | None = None,
    ) -> None:
        self._tools: dict[str, Tool] = {}
        self.on_outcome = on_outcome
        self._validators: dict[str, Any] = {}
        self.max_output_chars = max_output_chars
        self.default_timeout = default_timeout
        for tool in tools:
            self.add(tool)

    def add(self, tool: Tool) -> None:
        if tool.name in self._tools:
            raise ValueError(f"duplicate tool name {tool.name!r}")
        cls = validators.validator_for(tool.parameters)
        cls.check_schema(tool.parameters)
        self._tools[tool.name] = tool
        self._validators[tool.name] = cls(tool.parameters)

    def with_tools(self, tools: Iterable[Tool]) -> ToolRegistry:
        """A registry for one run: these tools on top of this one's (same caps, same outcome hook)."""
        overlay = ToolRegistry(max_output_chars=self.max_output_chars, default_timeout=self.default_timeout, on_outcome=self.on_outcome)
        overlay._tools = dict(self._tools)
        overlay._validators = dict(self._validators)
        for tool in tools:
            overlay.add(tool)
        return overlay

    def remove(self, name: str) -> None:
        """Withdraw a tool (an MCP server re-listed its tools); a run holding its name gets ``unknown_tool``."""
        self._tools.pop(name, None)
        self._validators.pop(name, None)

    def names(self) -> list[str]:
        return list(self._tools)

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def schemas(self, names: Iterable[str]) -> list[dict[str, Any]]:
        return [tool_schema(self._tools[n]) for n in names if n in self._tools]

    def describe(self) -> list[dict[str, Any]]:
        return [{"name": t.name, "description": t.description} for t in self._tools.values()]

    def validate(self, name: str, arguments: Any) -> str | None:
        """A readable list of what is wrong with ``arguments``, or None."""
        errors = sorted(self._validators[name].iter_errors(arguments), key=lambda e: list(e.path))
        if not errors:
            return None
        lines = []
        for err in errors[:5]:
            where = "/".join(str(p) for p in err.path) or "(root)"
            lines.append(f"{where}: {err.message}")
        return "; ".join(lines)

    async def call(self, name: str, raw_arguments: str | dict[str, Any] | None, context: ToolContext, *, timeout: float | None = None) -> ToolOutcome:
        started = time.perf_counter()
        tool = self._tools.get(name)
        # A tool may lower the output cap for itself (an MCP server's own setting), never raise it.
        own_cap = getattr(tool, "max_output_chars", None)
        cap = min(own_cap, self.max_output_chars) if isinstance(own_cap, int) else self.max_output_chars

        def outcome(status: str, content: str, arguments: Any = None, result: ToolResult | None = None) -> ToolOutcome:
            text, truncated = _truncate(content, cap)
            if self.on_outcome is not None:
                self.on_outcome(name, status, time.perf_counter() - started)
            return ToolOutcome(
                name=name,
                status=status,
                content=text,
                duration_ms=round((time.perf_counter() - started) * 1000, 2),
                arguments=arguments,
                truncated=truncated,
                data=result.data if result else None,
                sources=list(result.sources) if result else [],
                images=result.images if result and status == "ok" else (),
            )

        if tool is None:
            return outcome("unknown_tool", f"error: there is no tool named {name!r}. Available tools: {', '.join(self._tools)}.")
        if isinstance(raw_arguments, dict):
            arguments: Any = raw_arguments
        else:
            text = (raw_arguments or "").strip() or "{}"
            try:
                arguments = orjson.loads(text)
            except orjson.JSONDecodeError as exc:
                return outcome(
                    "invalid_arguments", f"error: the arguments for {name} are not valid JSON ({exc}). Send a JSON object matching the tool's schema."
                )
        if not isinstance(arguments, dict):
            return outcome("invalid_arguments", f"error: the arguments for {name} must be a JSON object, got {type(arguments).__name__}.", arguments)
        problem = self.validate(name, arguments)
        if problem is not None:
            return outcome("invalid_arguments", f"error: invalid arguments for {name}: {problem}", arguments)
        copied = copied_from_schema(tool.parameters, arguments)
        if copied is not None:
            return outcome(
                "invalid_arguments",
                f"error: invalid arguments for {name}: {copied}. Call it again with the actual values taken from the user's request.",
                arguments,
            )
        limit = min(x for x in (tool.timeout or self.default_timeout, timeout or float("inf")) if x)
        try:
            with anyio.fail_after(limit):
                result = await tool.run(arguments, context)
        except TimeoutError:
            return outcome("timeout", f"error: {name} did not finish within {limit:g} seconds and was stopped.", arguments)
        except anyio.get_cancelled_exc_class():
            raise
        except Exception as exc:
            log.warning("tool %s raised %s", name, type(exc).__name__, exc_info=True)
            message = str(exc)[:500]
            return outcome("error", f"error: {name} failed: {type(exc).__name__}" + (f": {message}" if message else ""), arguments)
        if not isinstance(result, ToolResult) or not isinstance(result.content, str):
            return outcome("error", f"error: {name} returned an invalid result.", arguments)
        return outcome("error" if result.is_error else "ok", result.content, arguments, result)
