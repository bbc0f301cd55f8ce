"""Token estimates with tiktoken, working offline.

tiktoken downloads its vocabularies on first use, which fails on machines
without internet. The two vocabularies we need ship gzipped inside the
package; on first use they are unpacked into a cache directory under the
names tiktoken's own cache uses (SHA-1 of the download URL), and
``TIKTOKEN_CACHE_DIR`` points there. tiktoken then loads them through its
normal path, including its SHA-256 check, so a corrupted file is refused, not
used.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import orjson
import tiktoken

from toolrelay.app.jsonbody import JSONValue

_VOCAB_DIR = Path(__file__).with_name("tokenizer")
_BLOB_URL = "https://openaipublic.blob.core.windows.net/encodings/{}.tiktoken"
_EXPECTED_SHA256 = {
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
}
# Model families that use o200k_base; everything else is estimated with cl100k_base.
_O200K_PREFIXES = ("gpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "o1", "o3", "o4", "chatgpt-4o", "gpt-oss")


def install_offline_vocabularies(cache_dir: Path | None = None) -> Path:
    """Make tiktoken's standard encodings loadable without network access."""
    target = Path(os.environ.get("TIKTOKEN_CACHE_DIR") or cache_dir or Path(tempfile.gettempdir()) / "toolrelay-tiktoken")
    # Private like the rest of the data directory (issue 10 item 16): 0700, files 0600.
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)  # <data_dir>/cache
    target.mkdir(exist_ok=True, mode=0o700)
    for name, expected in _EXPECTED_SHA256.items():
        cache_file = target / hashlib.sha1(_BLOB_URL.format(name).encode(), usedforsecurity=False).hexdigest()
        if cache_file.exists() and hashlib.sha256(cache_file.read_bytes()).hexdigest() == expected:
            continue
        data = gzip.decompress((_VOCAB_DIR / f"{name}.tiktoken.gz").read_bytes())
        if hashlib.sha256(data).hexdigest() != expected:
            raise RuntimeError(f"bundled tiktoken vocabulary {name} is corrupted")
        tmp = cache_file.with_suffix(f".tmp{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        tmp.replace(cache_file)
    os.environ["TIKTOKEN_CACHE_DIR"] = str(target)
    return target


def encoding_name_for(model: str) -> str:
    base = model.rsplit("/", 1)[-1].lower()
    return "o200k_base" if base.startswith(_O200K_PREFIXES) else "cl100k_base"


# Text is encoded in pieces of about this many characters, cut at a space when
# one is near: tiktoken's merge step is superlinear in the length of one
# pre-token (a run of letters without spaces), measured with 0.14: "a" * 1M
# took 0.58 s whole, 4M took 2.1 s.
_CHUNK_CHARS = 32_768
# Prompt counts remembered per request id, so admission, the context check and
# the end-of-request estimate encode a prompt once.
_MEMO_ENTRIES = 4096
# Inputs up to this many characters are counted on the event loop. Measured
# with tiktoken 0.14 on this VM: 8,192 characters of one letter (the worst
# shape) took 1.0 ms, 4,096 about 0.5 ms (the most one request can hold the
# loop here), a typical prompt of that size 0.15 ms; the hop to a worker thread costs tens of microseconds of CPU plus
# a wake-up, and nearly every real request is this small.
_INLINE_CHARS = 4096


def _chars_within(value: JSONValue, budget: int) -> int:
    """Characters of the strings in a JSON value, stopping once past ``budget`` (keys included)."""
    stack: list[JSONValue] = [value]
    total = 0
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, dict):
            for key, child in item.items():
                total += len(key) + 4
                stack.append(child)
        elif isinstance(item, list):
            stack.extend(item)
        else:
            total += 8
        if total > budget:
            break
    return total


def prompt_chars(payload: dict[str, Any], stop_at: int) -> int:
    """Characters of a request's message texts (no encoding, stops once past ``stop_at``):
    tells whether counting its tokens is worth a cheaper refusal first."""
    total = 0
    message: JSONValue
    value: JSONValue
    part: JSONValue
    for message in payload.get("messages") or ():
        if not isinstance(message, dict):
            continue
        for value in message.values():
            if isinstance(value, str):
                total += len(value)
            elif isinstance(value, list):
                for part in value:
                    if isinstance(part, dict) and isinstance(part.get("text"), str):
                        total += len(part["text"])
        if total > stop_at:
            break
    return total


class _Allowance:
    """Characters one count may still encode exactly; beyond them, text is bounded by its UTF-8 length."""

    __slots__ = ("chars",)

    def __init__(self, chars: int) -> None:
        self.chars = chars


def _pieces(text: str) -> Iterator[str]:
    start, end_of_text = 0, len(text)
    while start < end_of_text:
        end = start + _CHUNK_CHARS
        if end < end_of_text:
            cut = text.rfind(" ", start + _CHUNK_CHARS // 2, end)
            if cut > start:
                end = cut  # the space starts the next piece, as tiktoken's own split would
        yield text[start:end]
        start = end


class TokenCounter:
    """Estimates prompt and completion tokens the way OpenAI counts chat messages.

    Counting is bounded: text is encoded in pieces (linear time whatever its
    shape), and past ``exact_chars`` characters per count the rest is counted
    as its UTF-8 byte length, an upper bound (every token is at least one
    byte) that costs nothing. The async methods count in at most ``threads``
    worker threads, never on the event loop: one 10-million-character word
    used to stall every request for 13 s.
    """

    def __init__(self, cache_dir: Path | None = None, *, threads: int = 2, exact_chars: int = 1_000_000) -> None:
        self._cache_dir = cache_dir
        self._encodings: dict[str, tiktoken.Encoding] = {}
        self._lock = threading.Lock()
        self._installed = False
        self.exact_chars = exact_chars
        self._threads = threads
        self._limiter: Any = None  # an anyio.CapacityLimiter, made on the event loop that first needs it
        self._memo: OrderedDict[tuple[str, str], int] = OrderedDict()
        self.encoded_chars = 0  # characters given to tiktoken so far (observability, and tests)

    def install(self) -> None:
        """Unpack the offline vocabularies (files only, cheap); the encodings still load on first use."""
        with self._lock:
            if not self._installed:
                install_offline_vocabularies(self._cache_dir)
                self._installed = True

    def encoding(self, name: str) -> tiktoken.Encoding:
        enc = self._encodings.get(name)
        if enc is None:
            self.install()
            with self._lock:
                enc = self._encodings.get(name) or tiktoken.get_encoding(name)
                self._encodings[name] = enc
        return enc

    def warm(self) -> None:
        for name in _EXPECTED_SHA256:
            self.encoding(name)

    def is_loaded(self, model: str = "") -> bool:
        return encoding_name_for(model) in self._encodings

    async def prepare(self, model: str = "") -> None:
        """Load the encoding for ``model`` off the event loop (0.3-0.5 s, 40-70 MB, once).

        Encodings load on first need rather than at start-up: most upstreams
        report usage themselves, and an idle vocabulary is the largest part
        of the server's memory.
        """
        name = encoding_name_for(model)
        if name not in self._encodings:
            await anyio.to_thread.run_sync(self.encoding, name)

    # -- off the event loop ------------------------------------------------

    async def _in_thread(self, fn: Any, *args: Any) -> Any:
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(max(1, self._threads))
        return await anyio.to_thread.run_sync(fn, *args, limiter=self._limiter)

    async def count_prompt(self, payload: dict[str, Any], model: str = "", request_id: str | None = None) -> int:
        """Prompt tokens of a chat request, counted once per ``request_id`` (admission, context check, estimate)."""
        memo_key = (request_id, model) if request_id else None
        if memo_key is not None:
            known = self._memo.get(memo_key)
            if known is not None:
                return known
        await self.prepare(model)
        messages: list[Any]
        tools: list[Any] | None
        messages, tools = payload.get("messages") or [], payload.get("tools")
        if _chars_within(messages, _INLINE_CHARS) + (_chars_within(tools, _INLINE_CHARS) if tools else 0) <= _INLINE_CHARS:
            count = self.count_messages(messages, model, tools)
        else:
            count = await self._in_thread(self.count_messages, messages, model, tools)
        if memo_key is not None:
            memo = self._memo
            memo[memo_key] = count
            while len(memo) > _MEMO_ENTRIES:
                memo.popitem(last=False)
        return count

    def remember_prompt(self, request_id: str, model: str, count: int) -> None:
        """Record a prompt's count known without encoding (token-id inputs: their length), so
        :meth:`count_prompt` for this request returns it instead of reading ``messages``."""
        memo = self._memo
        memo[(request_id, model)] = count
        while len(memo) > _MEMO_ENTRIES:
            memo.popitem(last=False)

    async def count_messages_async(self, messages: list[Any], model: str = "", tools: list[Any] | None = None) -> int:
        await self.prepare(model)
        if _chars_within(messages, _INLINE_CHARS) + (_chars_within(tools, _INLINE_CHARS) if tools else 0) <= _INLINE_CHARS:
            return self.count_messages(messages, model, tools)
        return await self._in_thread(self.count_messages, messages, model, tools)

    async def count_text_async(self, text: str, model: str = "") -> int:
        if not text:
            return 0
        await self.prepare(model)
        if len(text) <= _INLINE_CHARS:
            return self.count_text(text, model)
        return await self._in_thread(self.count_text, text, model)

    # -- the counting itself (any thread) ------------------------------------

    def _encoded_len(self, enc: tiktoken.Encoding, text: str, allowance: _Allowance) -> int:
        size = len(text)
        if size > allowance.chars:
            allowance.chars = 0
            return len(text.encode("utf-8", "surrogatepass"))
        allowance.chars -= size
        self.encoded_chars += size
        if size <= _CHUNK_CHARS:
            return len(enc.encode(text, disallowed_special=()))
        return sum(len(enc.encode(piece, disallowed_special=())) for piece in _pieces(text))

    def count_text(self, text: str, model: str = "") -> int:
        if not text:
            return 0
        return self._encoded_len(self.encoding(encoding_name_for(model)), text, _Allowance(self.exact_chars))

    def count_messages(self, messages: list[Any], model: str = "", tools: list[Any] | None = None) -> int:
        """Prompt tokens for a chat request: 3 per message, 1 per name, 3 to prime the reply (entries that are not objects count nothing)."""
        enc = self.encoding(encoding_name_for(model))
        allowance = _Allowance(self.exact_chars)
        total = 3
        message: JSONValue
        for message in messages:
            if not isinstance(message, dict):
                continue
            total += 3
            for key, value in message.items():
                if key == "name":
                    total += 1
                total += self._value_tokens(enc, value, allowance)
        if tools:
            total += self._encoded_len(enc, orjson.dumps(tools).decode(), allowance)
        return total

    def _value_tokens(self, enc: tiktoken.Encoding, value: JSONValue, allowance: _Allowance) -> int:
        if isinstance(value, str):
            return self._encoded_len(enc, value, allowance)
        if isinstance(value, list):
            total = 0
            part: JSONValue
            for part in value:
                if isinstance(part, dict):
                    if part.get("type") == "text":
                        total += self._encoded_len(enc, str(part.get("text", "")), allowance)
                    elif part.get("type") == "image_url":
                        total += 85  # OpenAI's low-detail image cost; a floor, not a price
                    else:
                        total += self._encoded_len(enc, orjson.dumps(part).decode(), allowance)
            return total
        if isinstance(value, dict):
            return self._encoded_len(enc, orjson.dumps(value).decode(), allowance)
        return 0
