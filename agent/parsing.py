"""Finding tool calls in text, for models that do not emit native ``tool_calls``.

Measured on small local models asked to call one tool at temperature 0
(docs/agent.md, "Models without native tool calling"): none returned native
``tool_calls``; they wrote calls as ``<tool_call>{...}</tool_call>``, as a
fenced JSON block (Qwen2.5-Coder-1.5B), or as a bare
``{"name": ..., "arguments": {...}}`` object (Qwen2.5-Coder-0.5B). We accept those forms, in
that order, but only for tool names we actually offered, so ordinary JSON in
an answer is not mistaken for a call.

Everything here is linear in the length of the text (issue 10 item 18): the
model's output is untrusted, and the backtracking regexes this replaced took
quadratic time on inputs such as a fence followed by a long run of spaces
(one 100,000-space answer stalled the event loop for minutes), and the
streaming gate re-copied the whole turn's text on every chunk.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

_TAG = "<tool_call>"
_TAG_END = "</tool_call>"
_FENCE = "```"
# Info strings a fenced call may carry; any other (```python) is not a call.
_FENCE_LANGS = ("json", "tool_call", "tool")
_MARKERS = (_TAG, _FENCE)
# Whitespace a model puts between a marker and the JSON of its call; more than
# this and the text is not a call. Keeps what the gate holds back bounded.
MAX_GAP_CHARS = 256
# A textual call longer than this is treated as text: the gate never holds
# back more than this much of the answer (native tool calls have no such cap).
MAX_TEXT_CALL_CHARS = 256 * 1024


@dataclass(frozen=True, slots=True)
class ParsedCall:
    name: str
    arguments: str  # a JSON object, as the OpenAI wire format carries it


def _loads(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return None


def _as_call(obj: Any, known: set[str] | frozenset[str]) -> ParsedCall | None:
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


def _calls_from(obj: Any, known: set[str] | frozenset[str]) -> list[ParsedCall]:
    items = obj if isinstance(obj, list) else [obj]
    calls = [_as_call(item, known) for item in items]
    return [c for c in calls if c is not None]


def _tagged_blocks(text: str) -> Iterator[str]:
    """The insides of ``<tool_call>…</tool_call>`` blocks; an unclosed last one runs to the end."""
    at = 0
    while (start := text.find(_TAG, at)) >= 0:
        start += len(_TAG)
        end = text.find(_TAG_END, start)
        if end < 0:
            yield text[start:].strip()
            return
        yield text[start:end].strip()
        at = end + len(_TAG_END)


def _fence_body(block: str) -> str:
    for lang in _FENCE_LANGS:
        if block.startswith(lang):
            rest = block[len(lang) :].lstrip()
            if rest.startswith(("{", "[")):
                return rest.rstrip()
    return block.strip()


def _fenced_blocks(text: str) -> Iterator[str]:
    """The bodies of closed ````` fences, paired in order."""
    at = 0
    while (start := text.find(_FENCE, at)) >= 0:
        start += len(_FENCE)
        end = text.find(_FENCE, start)
        if end < 0:
            return
        yield _fence_body(text[start:end])
        at = end + len(_FENCE)


def _calls_in(blocks: Iterable[str], known: set[str] | frozenset[str]) -> list[ParsedCall]:
    calls: list[ParsedCall] = []
    for block in blocks:
        calls.extend(_calls_from(_loads(block), known))
    return calls


def parse_tool_calls(text: str, known: Iterable[str]) -> list[ParsedCall]:
    """Tool calls written as text, or an empty list when the text is an answer."""
    names = set(known)
    if not text or not names:
        return []
    if _TAG in text:
        calls = _calls_in(_tagged_blocks(text), names)
        if calls:
            return calls
    if _FENCE in text:
        calls = _calls_in(_fenced_blocks(text), names)
        if calls:
            return calls
    stripped = text.strip()
    if stripped.startswith(("{", "[")):
        return _calls_from(_loads(stripped), names)
    return []


def _fence_head(head: str) -> int | None:
    """After a fence marker: offset of the call's JSON, -1 while undecided, None when not a call."""
    for lang in (*_FENCE_LANGS, ""):
        if lang and not head.startswith(lang):
            if lang.startswith(head):
                return -1  # "js", "tool_c": the info string is still arriving
            continue
        rest = head[len(lang) :]
        body = rest.lstrip()
        if not body:
            return -1
        if body[0] in "{[":
            return len(head) - len(body)
    return None


def _tag_head(head: str) -> int | None:
    body = head.lstrip()
    if not body:
        return -1
    return len(head) - len(body) if body[0] in "{[" else None


_STRUCTURE = re.compile(r'[{}\[\]"\\]')


class _JsonEnd:
    """Finds where a JSON value that opens with ``{``/``[`` closes, fed piece by piece.

    Only structure is tracked (strings, escapes, nesting); validity is left to
    the JSON parser once the value is complete.
    """

    __slots__ = ("depth", "escaped", "in_string")

    def __init__(self) -> None:
        self.depth = 0
        self.in_string = False
        self.escaped = False

    def feed(self, text: str) -> int:
        """Offset just past the value's end in ``text``, or -1 if it has not ended."""
        at = 0
        if self.escaped:
            self.escaped = False
            at = 1
        while (match := _STRUCTURE.search(text, at)) is not None:
            char = match.group()
            at = match.end()
            if self.in_string:
                if char == "\\":
                    if at >= len(text):
                        self.escaped = True
                        return -1
                    at += 1
                elif char == '"':
                    self.in_string = False
            elif char == '"':
                self.in_string = True
            elif char in "{[":
                self.depth += 1
            elif char in "}]":
                self.depth -= 1
                if self.depth <= 0:
                    return at
        return -1


# TextGate states
_START = "start"  # nothing but whitespace so far: a bare JSON call may begin
_SCAN = "scan"  # streaming; only a partial marker at the very end is held
_HEAD = "head"  # a marker was seen; waiting for its JSON to begin
_BODY = "body"  # inside a tagged or fenced block; waiting for its closer
_BARE = "bare"  # inside a JSON value that opened the turn
_BARE_END = "bare_end"  # that value was a call; only whitespace may follow
_CALL = "call"  # a call was found: the rest of the turn is held
_OPEN = "open"  # nothing can be a call (no tool names): pass everything through


class TextGate:
    """Decides how much of a turn's streamed text can be shown as answer now.

    Text is held back only while it could still be a textual tool call: a
    partial marker at the very end (at most ``len("<tool_call>") - 1``
    characters), a marker and the whitespace after it until the JSON begins
    (at most :data:`MAX_GAP_CHARS`), and a block or bare JSON value until it
    closes (at most :data:`MAX_TEXT_CALL_CHARS`). When a closed block is not a
    call of one of ``known``, it is released and scanning goes on after it;
    when it is one, the rest of the turn is held. What is held at the end of
    the turn is parsed by the caller and either run as calls or released.
    Each character is examined a bounded number of times, so a turn costs
    time linear in its length.
    """

    def __init__(self, known: Iterable[str] = ()) -> None:
        self.known = frozenset(known)
        self._parts: list[str] = []
        self._text: str | None = ""
        self._held: list[str] = []
        self._held_chars = 0
        self._shown_any = False
        self._state = _START if self.known else _OPEN
        self._closer = ""
        self._head = ""  # after the marker, while in _HEAD (bounded by MAX_GAP_CHARS)
        self._tail = ""  # the last len(closer) - 1 characters, while in _BODY
        self._json = _JsonEnd()

    @property
    def text(self) -> str:
        """Everything fed so far."""
        if self._text is None:
            self._text = "".join(self._parts)
            self._parts = [self._text]
        return self._text

    def _hold(self, text: str) -> None:
        if text:
            self._held.append(text)
            self._held_chars += len(text)

    def _release(self, out: list[str]) -> None:
        out.extend(self._held)
        self._held = []
        self._held_chars = 0

    def feed(self, piece: str) -> str:
        if not piece:
            return ""
        self._parts.append(piece)
        self._text = None
        out: list[str] = []
        rest = piece
        while rest:
            rest = getattr(self, "_on_" + self._state)(rest, out)
        shown = "".join(out)
        if shown:
            self._shown_any = True
        return shown

    def rest(self) -> str:
        """The text not shown yet; call once at the end of the turn."""
        out: list[str] = []
        self._release(out)
        return "".join(out)

    # Each handler consumes a prefix of ``text`` and returns what is left.

    def _on_open(self, text: str, out: list[str]) -> str:
        out.append(text)
        return ""

    def _on_call(self, text: str, out: list[str]) -> str:
        self._hold(text)
        return ""

    def _on_start(self, text: str, out: list[str]) -> str:
        body = text.lstrip()
        if not body:
            self._hold(text)
            if self._held_chars > MAX_GAP_CHARS:
                self._state = _SCAN
            return ""
        self._hold(text[: len(text) - len(body)])
        if body[0] in "{[":
            self._state = _BARE
            self._json = _JsonEnd()
        else:
            self._state = _SCAN
        return body

    def _on_scan(self, text: str, out: list[str]) -> str:
        before = "".join(self._held)  # a partial marker, or leading whitespace
        self._held, self._held_chars = [], 0
        text = before + text
        found = -1
        marker = ""
        for candidate in _MARKERS:
            at = text.find(candidate)
            if at >= 0 and (found < 0 or at < found):
                found, marker = at, candidate
        if found >= 0:
            lead = text[:found]
            if not self._shown_any and not out and lead.isspace():
                self._hold(lead)  # whitespace before a call at the start is part of it
            elif lead:
                out.append(lead)
            self._hold(marker)
            self._closer = _TAG_END if marker == _TAG else _FENCE
            self._head = ""
            self._state = _HEAD
            return text[found + len(marker) :]
        keep = 0
        for size in range(min(len(_TAG) - 1, len(text)), 0, -1):
            tail = text[-size:]
            if any(m.startswith(tail) for m in _MARKERS):
                keep = size
                break
        cut = len(text) - keep
        if not self._shown_any and not out and (cut == 0 or text[:cut].isspace()) and len(text) <= MAX_GAP_CHARS:
            self._hold(text)
            return ""
        out.append(text[:cut])
        self._hold(text[cut:])
        return ""

    def _on_head(self, text: str, out: list[str]) -> str:
        before = len(self._head)
        head = self._head + text
        decide = _tag_head if self._closer == _TAG_END else _fence_head
        offset = decide(head)
        if offset is None or (offset < 0 and len(head) > MAX_GAP_CHARS + len("tool_call")):
            self._release(out)  # the marker and what followed it are text
            self._state = _SCAN
            return text
        if offset < 0:
            self._head = head
            self._hold(text)
            return ""
        split = offset - before  # the JSON starts in this piece: waiting pieces hold no brace
        self._hold(text[:split])
        self._tail = ""
        self._state = _BODY
        return text[split:]

    def _on_body(self, text: str, out: list[str]) -> str:
        closer = self._closer
        window = self._tail + text
        at = window.find(closer)
        if at < 0:
            self._hold(text)
            self._tail = window[-(len(closer) - 1) :]
            if self._held_chars > MAX_TEXT_CALL_CHARS:
                self._give_up(out)
            return ""
        end = at + len(closer) - len(self._tail)
        self._hold(text[:end])
        block = "".join(self._held)
        blocks = _tagged_blocks(block) if closer == _TAG_END else _fenced_blocks(block)
        if _calls_in(blocks, self.known):
            self._state = _CALL
        else:
            self._release(out)
            self._state = _SCAN
        return text[end:]

    def _on_bare(self, text: str, out: list[str]) -> str:
        end = self._json.feed(text)
        if end < 0:
            self._hold(text)
            if self._held_chars > MAX_TEXT_CALL_CHARS:
                self._give_up(out)
            return ""
        self._hold(text[:end])
        if _calls_from(_loads("".join(self._held).strip()), self.known):
            self._state = _BARE_END
        else:
            self._release(out)
            self._state = _SCAN
        return text[end:]

    def _on_bare_end(self, text: str, out: list[str]) -> str:
        if text.isspace():
            self._hold(text)
            return ""
        # Words after the object: the turn is not a bare call after all.
        self._release(out)
        self._state = _SCAN
        return text

    def _give_up(self, out: list[str]) -> None:
        """Too long to be a call: release it and stream the rest of the turn."""
        self._release(out)
        self._state = _OPEN
