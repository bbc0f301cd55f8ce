"""Every identifier toolrelay mints, one named function each.

Two kinds, chosen per use:

- *Unique, not secret* (request and completion ids): a random per-process
  prefix plus a counter, for the cost of a string format, where
  ``os.urandom`` is a system call per id (measured 8 us each under
  profiling, two per request).
- *Unguessable* (tool-call ids a client sends back to resume a paused run,
  run keys, API key ids): drawn from ``secrets``/``os.urandom``.

Formats are part of the wire contract and the stored data; keep them.
"""

from __future__ import annotations

import itertools
import os
import secrets
import threading
import time

__all__ = [
    "MEMORY_ID_PREFIX",
    "new_approval_request_id",
    "new_completion_id",
    "new_item_id",
    "new_key_id",
    "new_memory_id",
    "new_repaired_tool_call_id",
    "new_request_id",
    "new_response_id",
    "new_run_key",
    "new_tool_call_id",
    "unique_hex",
]

_PREFIX = os.urandom(6).hex()
_COUNTER = itertools.count(int.from_bytes(os.urandom(5), "big"))


def unique_hex() -> str:
    """24 hex digits, unique within this process and, by its random prefix, across processes."""
    return f"{_PREFIX}{next(_COUNTER) & 0xFFFFFFFFFFFF:012x}"


def new_request_id() -> str:
    """``req_`` + 24 hex digits: the ``x-request-id`` header, the access log and the ledger."""
    return "req_" + unique_hex()


def new_completion_id() -> str:
    """``chatcmpl-`` + 24 hex digits: the ``id`` of a completion and of all its chunks."""
    return "chatcmpl-" + unique_hex()


def new_tool_call_id() -> str:
    """``call_`` + 24 URL-safe characters (144 random bits): every tool call the agent returns.

    Unguessable, whatever id the upstream gave the call: llama.cpp and Ollama
    send predictable, reused ids ("call_0"), and paused runs are looked up by
    the ids the client sends back.
    """
    return "call_" + secrets.token_urlsafe(18)


def new_repaired_tool_call_id() -> str:
    """``call_`` + 24 hex digits: for a whole upstream tool call that came without an id."""
    return "call_" + os.urandom(12).hex()


def new_approval_request_id() -> str:
    """``mcpr_`` + 24 URL-safe characters (144 random bits): a call waiting for the client's approval; it keys the paused run."""
    return "mcpr_" + secrets.token_urlsafe(18)


def new_run_key() -> str:
    """``run_`` + 24 hex digits: the key a paused agent run is stored under."""
    return "run_" + os.urandom(12).hex()


def new_key_id() -> str:
    """12 hex digits: the public id inside an API key ``tr-<id>-<secret>``."""
    return secrets.token_hex(6)


MEMORY_ID_PREFIX = "mem_"
_B32 = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford, ascending in ASCII
_memory_id_lock = threading.Lock()
_memory_id_last_ms = 0
_memory_id_last_rand = 0


def _b32(n: int, width: int) -> str:
    out: list[str] = []
    for _ in range(width):
        out.append(_B32[n & 31])
        n >>= 5
    return "".join(reversed(out))


def new_memory_id() -> str:
    """``mem_`` + 10 chars of milliseconds + 16 random chars (ULID layout).

    Ids sort in creation order (strictly within one process, to the
    millisecond across processes), which is what makes ``after=<id>`` cursors
    work even when the cursor's memory has since been deleted.
    """
    global _memory_id_last_ms, _memory_id_last_rand
    with _memory_id_lock:
        ms = time.time_ns() // 1_000_000
        if ms <= _memory_id_last_ms:
            ms = _memory_id_last_ms
            rand = _memory_id_last_rand + 1
            if rand >= 1 << 80:  # 2**80 ids in one millisecond: move on
                ms, rand = ms + 1, secrets.randbits(79)
        else:
            rand = secrets.randbits(79)  # headroom for increments
        _memory_id_last_ms, _memory_id_last_rand = ms, rand
    return MEMORY_ID_PREFIX + _b32(ms, 10) + _b32(rand, 16)


def new_response_id() -> str:
    """``resp_`` + 24 hex digits: the id of a response, stored and looked up by it (with the key's scope)."""
    return "resp_" + unique_hex()


def new_item_id(prefix: str) -> str:
    """``<prefix>_`` + 24 hex digits: output and input item ids (``msg``, ``fc``, ``rs``, ``fco``)."""
    return f"{prefix}_{unique_hex()}"
