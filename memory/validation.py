"""What the memory store accepts: size bounds, and the cleaning of every value a caller sends.

Text, tags, metadata, ids and scopes come from clients and models. They are
checked and normalized here before any SQL sees them: lone surrogates
(which SQLite refuses) become U+FFFD, tags are case-folded and deduplicated,
metadata must be JSON of bounded size.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from .models import MemoryValidationError

__all__ = [
    "DEFAULT_LIMITS",
    "MemoryLimits",
    "as_query_text",
    "check_id",
    "check_scope",
    "clamp",
    "clean_metadata",
    "clean_tags",
    "clean_text",
    "normalize_tag",
    "scrub",
]


class MemoryLimits:
    """Size bounds (all inclusive)."""

    __slots__ = (
        "max_bytes_per_key",
        "max_bytes_per_scope",
        "max_list_limit",
        "max_memories_per_key",
        "max_memories_per_scope",
        "max_metadata_bytes",
        "max_search_limit",
        "max_tag_chars",
        "max_tags",
        "max_text_bytes",
    )

    def __init__(
        self,
        *,
        max_text_bytes: int = 8192,
        max_tags: int = 16,
        max_tag_chars: int = 64,
        max_metadata_bytes: int = 4096,
        max_search_limit: int = 100,
        max_list_limit: int = 1000,
        max_memories_per_scope: int = 0,
        max_bytes_per_scope: int = 0,
        max_memories_per_key: int = 0,
        max_bytes_per_key: int = 0,
    ) -> None:
        self.max_text_bytes = max_text_bytes
        self.max_tags = max_tags
        self.max_tag_chars = max_tag_chars
        self.max_metadata_bytes = max_metadata_bytes
        self.max_search_limit = max_search_limit
        self.max_list_limit = max_list_limit
        # Storage caps (0: none); a "key" is every scope sharing the part
        # before the first "/" (an API key and all its users).
        self.max_memories_per_scope = max_memories_per_scope
        self.max_bytes_per_scope = max_bytes_per_scope
        self.max_memories_per_key = max_memories_per_key
        self.max_bytes_per_key = max_bytes_per_key


DEFAULT_LIMITS = MemoryLimits()


def scrub(s: str) -> str:
    """``s`` with lone surrogates (unencodable, SQLite would refuse them) as U+FFFD."""
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        return "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in s)


def check_scope(scope: str) -> str:
    if not isinstance(scope, str) or not scope or len(scope) > 2048 or scrub(scope) != scope:
        raise MemoryValidationError("scope must be a non-empty string of at most 2048 characters")
    return scope


def check_id(id: Any) -> str | None:
    """A usable id string, or None for anything that cannot be one."""
    if not isinstance(id, str) or not id or len(id) > 200 or scrub(id) != id:
        return None
    return id


def normalize_tag(tag: str) -> str:
    """Tags compare case-insensitively, with whitespace collapsed."""
    return " ".join(scrub(str(tag)).split()).casefold()


def clean_tags(tags: Iterable[str] | None, limits: MemoryLimits, *, strict: bool) -> list[str]:
    if tags is None:
        return []
    if isinstance(tags, str):
        tags = [tags]
    out: list[str] = []
    for raw in tags:
        if not isinstance(raw, str):
            if strict:
                raise MemoryValidationError("tags must be strings")
            continue
        tag = normalize_tag(raw)
        if not tag:
            continue
        if len(tag) > limits.max_tag_chars:
            if strict:
                raise MemoryValidationError(f"a tag may have at most {limits.max_tag_chars} characters")
            tag = tag[: limits.max_tag_chars]
        if tag not in out:
            out.append(tag)
    if len(out) > limits.max_tags:
        if strict:
            raise MemoryValidationError(f"at most {limits.max_tags} tags per memory")
        out = out[: limits.max_tags]
    return out


def clean_text(text: object, limits: MemoryLimits) -> str:
    if not isinstance(text, str):
        raise MemoryValidationError("text must be a string")
    text = scrub(text).strip()
    if not text:
        raise MemoryValidationError("text must not be empty")
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > limits.max_text_bytes:
        raise MemoryValidationError(f"text is {size} bytes, the limit is {limits.max_text_bytes}")
    return text


def clean_metadata(metadata: Mapping[str, Any] | None, limits: MemoryLimits) -> str | None:
    if metadata is None:
        return None
    if not isinstance(metadata, Mapping):
        raise MemoryValidationError("metadata must be an object")
    try:
        encoded = json.dumps(dict(metadata), ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        if scrub(encoded) != encoded:  # lone surrogates: keep them as JSON escapes
            encoded = json.dumps(dict(metadata), ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise MemoryValidationError(f"metadata is not JSON-serializable: {exc}") from None
    if len(encoded.encode("utf-8")) > limits.max_metadata_bytes:
        raise MemoryValidationError(f"metadata may be at most {limits.max_metadata_bytes} bytes as JSON")
    return encoded


def clamp(value: Any, lo: int, hi: int, default: int) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        return default
    return max(lo, min(hi, n))


def as_query_text(query: Any) -> str:
    """A search query as text (anything else a caller sent becomes its ``str``)."""
    if isinstance(query, str):
        return scrub(query)
    return "" if query is None else scrub(str(query))
