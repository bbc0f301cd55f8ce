"""Client JSON Schemas (tool ``parameters``, ``response_format`` schemas): bounded, then checked off the loop.

Meta-validating a schema with jsonschema is pure Python and slow: measured
0.35 s per 1,000 properties (2 s for 5,000, 14 s for 50,000). It used to run
on the event loop, before authentication, with a cache keyed by the schema's
full text: one 50,000-property tool froze ``/health`` for 20 s, and ten
16 MB schemas kept 140 MB resident. Now:

1. :func:`check_schema_shape` (from :func:`app.validation.check_request`,
   before anything else) refuses, with a cheap walk, a schema nested deeper
   than ``max_schema_depth`` and a request whose schemas together exceed
   ``max_schema_bytes`` or ``max_schema_objects`` (every JSON object in a
   schema is a subschema jsonschema has to visit).
2. :class:`SchemaChecker` meta-validates after authentication and
   admission, in at most ``schema_check_threads`` worker threads, under a
   ``schema_check_seconds`` time limit (400 ``schema_too_complex``).
3. Verdicts are cached by a 16-byte BLAKE2b digest of the canonical schema
   bytes: the cache never holds a schema, and is bounded in count.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import anyio
import orjson
from jsonschema import exceptions as jsonschema_exceptions
from jsonschema import validators

from toolrelay.app.errors import OpenAIError, invalid_request

# A refusal quotes jsonschema's message, which can quote the schema itself.
_MAX_PROBLEM_CHARS = 300


class SchemaLimits:
    """The caps of one server (from ``[server]``); the defaults admit OpenAI-sized schemas."""

    __slots__ = ("cache_entries", "max_bytes", "max_depth", "max_objects", "seconds", "threads")

    def __init__(
        self,
        *,
        max_bytes: int = 512 * 1024,
        max_depth: int = 64,
        max_objects: int = 10_000,
        seconds: float = 10.0,
        threads: int = 2,
        cache_entries: int = 1024,
    ) -> None:
        self.max_bytes = max_bytes
        self.max_depth = max_depth
        self.max_objects = max_objects
        self.seconds = seconds
        self.threads = max(1, threads)
        self.cache_entries = max(0, cache_entries)

    @classmethod
    def from_server(cls, server: Any) -> SchemaLimits:
        return cls(
            max_bytes=server.max_schema_bytes,
            max_depth=server.max_schema_depth,
            max_objects=server.max_schema_objects,
            seconds=server.schema_check_seconds,
            threads=server.schema_check_threads,
        )


DEFAULT_LIMITS = SchemaLimits()


class SchemaBudget:
    """What the schemas of one request have used of the per-request caps so far."""

    __slots__ = ("bytes", "limits", "objects")

    def __init__(self, limits: SchemaLimits) -> None:
        self.limits = limits
        self.bytes = 0
        self.objects = 0


def _too_complex(param: str, why: str) -> OpenAIError:
    return invalid_request(f"Invalid schema for '{param}': {why}.", param=param, code="schema_too_complex")


def _wrong_schema(param: str) -> OpenAIError:
    return invalid_request(f"Invalid schema for '{param}'.", param=param, code="invalid_function_parameters" if "tools" in param else "invalid_schema")


def check_schema_shape(schema: dict[str, Any], param: str, budget: SchemaBudget) -> None:
    """Refuse a schema over the depth cap, or one that takes the request over its object or byte caps.

    An iterative walk that stops at the first cap crossed; then one orjson
    encode for the size (C speed, also catches what JSON cannot encode).
    """
    limits = budget.limits
    objects = budget.objects
    stack: list[tuple[Any, int]] = [(schema, 1)]
    pop, push = stack.pop, stack.append
    while stack:
        node, depth = pop()
        if depth > limits.max_depth:
            raise _too_complex(param, f"nested deeper than {limits.max_depth} levels (server.max_schema_depth)")
        if isinstance(node, dict):
            objects += 1
            if objects > limits.max_objects:
                raise _too_complex(param, f"the request's schemas have more than {limits.max_objects} objects (server.max_schema_objects)")
            children = node.values()
        else:
            children = node
        for child in children:
            if isinstance(child, (dict, list)):
                push((child, depth + 1))
    budget.objects = objects
    try:
        size = len(orjson.dumps(schema))
    except TypeError:
        raise _wrong_schema(param) from None
    budget.bytes += size
    if budget.bytes > limits.max_bytes:
        raise _too_complex(param, f"the request's schemas are larger than {limits.max_bytes} bytes (server.max_schema_bytes)")


def request_schemas(payload: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(param, schema) for every client schema of a request that passed :func:`app.validation.check_request`."""
    for i, tool in enumerate(payload.get("tools") or ()):
        if isinstance(tool, dict) and tool.get("type", "function") == "function":
            function = tool.get("function")
            if isinstance(function, dict) and isinstance(function.get("parameters"), dict):
                yield f"tools[{i}].function.parameters", function["parameters"]
    response_format = payload.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
        spec = response_format.get("json_schema")
        if isinstance(spec, dict) and isinstance(spec.get("schema"), dict):
            yield "response_format.json_schema.schema", spec["schema"]


def schema_problem(schema: dict[str, Any]) -> str | None:
    """jsonschema's complaint about ``schema`` against its meta-schema, or None. Slow: run it in a thread."""
    try:
        validators.validator_for(schema).check_schema(schema)
    except jsonschema_exceptions.SchemaError as exc:
        message = exc.message
        return message if len(message) <= _MAX_PROBLEM_CHARS else message[:_MAX_PROBLEM_CHARS] + "..."
    return None


class VerdictCache:
    """schema digest -> problem (None = valid), least recently used dropped first.

    Holds 16-byte digests and short strings only, so its size is bounded by
    ``entries`` whatever the schemas weigh.
    """

    __slots__ = ("_entries", "_limit", "_lock")

    def __init__(self, entries: int) -> None:
        self._entries: OrderedDict[bytes, str | None] = OrderedDict()
        self._limit = entries
        self._lock = threading.Lock()

    @staticmethod
    def digest(schema: dict[str, Any]) -> bytes:
        return hashlib.blake2b(orjson.dumps(schema, option=orjson.OPT_SORT_KEYS), digest_size=16).digest()

    def get(self, digest: bytes) -> tuple[bool, str | None]:
        with self._lock:
            if digest not in self._entries:
                return False, None
            self._entries.move_to_end(digest)
            return True, self._entries[digest]

    def put(self, digest: bytes, problem: str | None) -> None:
        if not self._limit:
            return
        with self._lock:
            self._entries[digest] = problem
            self._entries.move_to_end(digest)
            while len(self._entries) > self._limit:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


class SchemaChecker:
    """Meta-validates a request's schemas off the event loop, a few at a time, under a time limit.

    A worker thread cannot be stopped: when the time limit passes the request
    gets its 400 and the thread finishes on its own, still holding its slot
    (a slot is freed by the thread, not by the waiting request), so a flood
    of slow schemas never runs more than ``threads`` of them at once.
    """

    def __init__(self, limits: SchemaLimits = DEFAULT_LIMITS) -> None:
        self.limits = limits
        self.cache = VerdictCache(limits.cache_entries)
        self._slots = anyio.CapacityLimiter(limits.threads)
        # Our own thread pool budget, so these threads never take the default pool's tokens.
        self._threads = anyio.CapacityLimiter(limits.threads)

    async def check(self, payload: dict[str, Any]) -> None:
        """Raise a 400 :class:`OpenAIError` for the first invalid (or too slow to check) schema."""
        for param, schema in request_schemas(payload):
            digest = self.cache.digest(schema)
            known, problem = self.cache.get(digest)
            if not known:
                try:
                    with anyio.fail_after(self.limits.seconds):
                        problem = await self._run(schema)
                except TimeoutError:
                    # Not cached: the same schema may well pass on a quieter server.
                    raise _too_complex(param, f"checking it took longer than {self.limits.seconds:g} s (server.schema_check_seconds)") from None
                self.cache.put(digest, problem)
            if problem is not None:
                code = "invalid_function_parameters" if param.startswith("tools") else "invalid_schema"
                raise invalid_request(f"Invalid schema for '{param}': {problem}", param=param, code=code)

    async def _run(self, schema: dict[str, Any]) -> str | None:
        loop = asyncio.get_running_loop()
        slots = self._slots
        token = object()
        await slots.acquire_on_behalf_of(token)
        held = [True]
        started = [False]

        def release() -> None:  # on the loop only, so no lock: once, whoever comes first
            if held[0]:
                held[0] = False
                slots.release_on_behalf_of(token)

        def work() -> str | None:
            started[0] = True
            try:
                return schema_problem(schema)
            finally:
                loop.call_soon_threadsafe(release)

        try:
            return await anyio.to_thread.run_sync(work, abandon_on_cancel=True, limiter=self._threads)
        except BaseException:
            if not started[0]:
                release()  # cancelled before the thread picked it up: nobody else will free the slot
            raise
