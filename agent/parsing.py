"""Finding tool calls in text, for models that do not emit native ``tool_calls``.

Measured on small local models (shared/research/local-llm.md section 3): they
write calls as ``<tool_call>{...}</tool_call>``, as a fenced JSON block, or as
a bare ``{"name": ..., "arguments": {...}}`` object. We accept those forms, in
that order, but only for tool names we actually offered, so ordinary JSON in
an answer is not mistaken for a call.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable

import orjson

_TAGGED = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)
_FENCED = re.compile(r"```(?:json|tool_call|tool)?\s*\n?(.*?)```", re.DOTALL)


@dataclass(frozen=True, slots=True)
class ParsedCall:
    name: str
    arguments: str  # a JSON object, as the OpenAI wire format carries it


def _loads(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return None


def _as_call(obj: Any, known: set[str]) -> ParsedCall | None:
    if not isinstance(obj, dict):
        return None
    # {"name", "arguments"} (Hermes/Qwen), {"tool", "arguments"} (our constrained
    # shape), {"function": {"name", "arguments"}} (OpenAI-ish), "parameters" (Llama 3).
    if isinstance(obj.get("function"), dict):
        obj = obj["function"]
    name = obj.get("name", obj.get("tool"))
    if not isinstance(name, str) or name not in known:
        return None
    arguments = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(arguments, str):
        parsed = _loads(arguments)
        arguments = parsed if isinstance(parsed, dict) else None
    if not isinstance(arguments, dict):
        return None
    return ParsedCall(name, orjson.dumps(arguments).decode())


def _calls_from(obj: Any, known: set[str]) -> list[ParsedCall]:
    items = obj if isinstance(obj, list) else [obj]
    calls = [_as_call(item, known) for item in items]
    return [c for c in calls if c is not None]


def parse_tool_calls(text: str, known: Iterable[str]) -> list[ParsedCall]:
    """Tool calls written as text, or an empty list when the text is an answer."""
    names = set(known)
    if not text or not names:
        return []
    if "<tool_call>" in text:
        calls = []
        for block in _TAGGED.findall(text):
            calls.extend(_calls_from(_loads(block), names))
        if calls:
            return calls
    if "```" in text:
        calls = []
        for block in _FENCED.findall(text):
            calls.extend(_calls_from(_loads(block.strip()), names))
        if calls:
            return calls
    stripped = text.strip()
    if stripped.startswith(("{", "[")):
        return _calls_from(_loads(stripped), names)
    return []


def may_be_tool_call(prefix: str) -> bool:
    """Whether streamed text could still turn out to be a textual tool call.

    While this holds we hold the text back instead of streaming it as the
    answer; once it fails we flush and stream the rest as it comes.
    """
    head = prefix.lstrip()
    if not head:
        return True
    return head.startswith(("{", "[", "<tool_call", "```")) or "<tool_call>".startswith(head) or "```".startswith(head)


_MARKERS = ("<tool_call", "```")


class TextGate:
    """Decides how much of a turn's streamed text can be shown as answer now.

    Text is held back while it could still be a textual tool call: all of it
    when it starts like one, else everything from a ``<tool_call`` or fence
    marker on (and a partial marker at the very end, until the next piece
    shows what it is). What is held is parsed at the end of the turn and
    either run as calls or released as text.
    """

    def __init__(self) -> None:
        self.text = ""
        self.shown = 0
        self._held = False

    def feed(self, piece: str) -> str:
        self.text += piece
        if self._held:
            return ""
        if self.shown == 0 and may_be_tool_call(self.text):
            return ""
        text = self.text
        cut = len(text)
        for marker in _MARKERS:
            found = text.find(marker, self.shown)
            if found >= 0 and found < cut:
                cut = found
                self._held = True
        if not self._held:
            for marker in _MARKERS:
                for size in range(min(len(marker) - 1, len(text) - self.shown), 0, -1):
                    if text.endswith(marker[:size]):
                        cut = min(cut, len(text) - size)
                        break
        out = text[self.shown:cut]
        self.shown = cut
        return out

    def rest(self) -> str:
        """The text not shown yet; call once at the end of the turn."""
        out = self.text[self.shown:]
        self.shown = len(self.text)
        return out
