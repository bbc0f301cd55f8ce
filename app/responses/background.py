"""``background: true`` responses: runs that outlive the HTTP request that started them.

The route builds the turn exactly as for a foreground request (proxy,
agent, or passed through to a native Responses upstream: whatever produces
the events) and hands it here instead of answering from it.
:meth:`BackgroundRuns.start` stores the response as ``queued``, takes the
request's end over from the ASGI layer (:meth:`RequestInfo.hand_off`: the
admission ticket, its parallel slot and the one ledger row now belong to the
run) and runs the turn in a task of its own. The task is the single owner of
that end: whatever way the run stops (finished, failed, cancelled, the server
shutting down) it stores the final response, then calls ``gate.release``
once, so the slot is held and the latency measured for the whole run and the
ledger row carries its usage.

A streamed background run writes its events into a replay log: the request
that started it follows the log, and a client that disconnects only stops
following (the run goes on); ``GET /v1/responses/{id}?stream=true&starting_after=N``
follows it again from any sequence number while the run is alive in this
process. The log lives as long as the run.

Runs are per process: caps count this process's runs, and only the process
running a response can cancel it (docs/responses.md).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from toolrelay.app.errors import OpenAIError
from toolrelay.app.responses.stream import failure_error

if TYPE_CHECKING:
    from toolrelay.app.gate import Gate
    from toolrelay.app.middleware import RequestInfo
    from toolrelay.app.responses.store import ResponseStorage

__all__ = ["CUT_SHORT", "BackgroundRuns", "BackgroundTurn", "background_error"]

log = logging.getLogger("toolrelay.responses")

# The ledger's status and error code for a run that did not end on its own.
_CANCELLED = (499, "cancelled")
_SHUTDOWN = (503, "server_shutdown")
#: Error codes of a request stopped before its end (its client left, a cancel, shutdown): its usage is estimated.
CUT_SHORT = frozenset({"client_disconnected", _CANCELLED[1], _SHUTDOWN[1]})
_SHUTDOWN_ERROR = {"code": "server_error", "message": "The server shut down before this background response finished."}
_CRASH_ERROR = {"code": "server_error", "message": "The server stopped before this background response finished."}
_KEEPALIVE = b": keep-alive\n\n"
# A follower with nothing to send for this long sends a comment line, so proxies keep the stream open.
_KEEPALIVE_SECONDS = 15.0
# How long shutdown waits for cancelled runs to store their final state.
_SHUTDOWN_WAIT_SECONDS = 10.0


# What a turn is fed: app.events for a translated or agent turn, the upstream's raw replies for a passed-through one.
_Fed = TypeVar("_Fed")
_Fed_contra = TypeVar("_Fed_contra", contravariant=True)


class BackgroundTurn(Protocol[_Fed_contra]):
    """What a run needs of a turn, whatever makes it: the route's ``_Turn`` (proxy and agent mode, fed
    :mod:`app.events`) or the passthrough's ``_NativeTurn`` (fed the upstream's replies)."""

    response_id: str
    scope: str
    info: RequestInfo

    def snapshot(self, status: str, error: dict[str, Any] | None = None) -> dict[str, Any]:
        """The response object with no output yet (queued, in progress, cancelled, failed)."""
        ...

    async def keep(self, response: dict[str, Any], *, running: bool = False) -> None:
        """Store ``response`` (``running``: not settled yet)."""
        ...

    async def answer(self, events: AsyncGenerator[_Fed_contra, None], /) -> dict[str, Any]:
        """Run the turn to its end and store the final response; raise the upstream's error."""
        ...

    def sse(self, events: AsyncGenerator[_Fed_contra, None], /) -> AsyncGenerator[bytes, None]:
        """The whole event stream, a failure included; the final response is stored before the last event."""
        ...


def background_error(message: str, *, param: str | None = None, code: str | None = None) -> OpenAIError:
    return OpenAIError(400, message, type="invalid_request_error", param=param, code=code)


def _too_many(what: str, limit: int) -> OpenAIError:
    return OpenAIError(
        429,
        f"Too many background responses in progress {what}: the limit is {limit} at a time. Wait for one to finish or cancel it.",
        type="rate_limit_error",
        code="too_many_background_responses",
        headers={"retry-after": "1", "retry-after-ms": "1000"},
    )


class _Replay:
    """A streamed run's events, one entry per ``sequence_number``; followers wait for more."""

    __slots__ = ("events", "closed", "_changed")

    def __init__(self) -> None:
        self.events: list[bytes] = []
        self.closed = False
        self._changed = asyncio.Event()

    def add(self, chunk: bytes) -> None:
        # The writer frames every event as ``event: ...\ndata: <one-line JSON>\n\n``, numbered from 0
        # in order, so the n-th frame is sequence number n; keep-alive comments are not events.
        for frame in chunk.split(b"\n\n"):
            if frame and not frame.startswith(b":"):
                self.events.append(frame + b"\n\n")
        self._wake()

    def close(self) -> None:
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def follow(self, after: int) -> AsyncIterator[bytes]:
        sent = max(after + 1, 0)
        while True:
            events = self.events
            if sent < len(events):
                batch, sent = events[sent:], len(events)
                yield b"".join(batch)
                continue
            if self.closed:
                return
            changed = self._changed
            try:
                await asyncio.wait_for(changed.wait(), _KEEPALIVE_SECONDS)
            except TimeoutError:
                yield _KEEPALIVE


@dataclass(slots=True, eq=False)
class _Run:
    turn: BackgroundTurn[Any]
    replay: _Replay | None
    task: asyncio.Task[None] | None = None
    # Why the task was cancelled: _CANCELLED or _SHUTDOWN (None: it was not).
    stopped: tuple[int, str] | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)


class BackgroundRuns:
    """This process's background runs: start, follow, cancel, and stop them all at shutdown."""

    def __init__(self, store: ResponseStorage, gate: Gate, *, max_per_key: int, max_total: int) -> None:
        self._store = store
        self._gate = gate
        self._max_per_key = max_per_key
        self._max_total = max_total
        self._runs: dict[tuple[str, str], _Run] = {}
        self._per_scope: dict[str, int] = {}
        self._closing = False

    def __len__(self) -> int:
        return len(self._runs)

    async def start_up(self) -> None:
        """Runs a crash or a kill left ``queued``/``in_progress`` will never finish: say so."""
        failed = await self._store.fail_abandoned(_CRASH_ERROR)
        if failed:
            log.warning("marked %d background responses of a stopped server failed", failed)

    def admit(self, scope: str, *, store: bool) -> None:
        """Raise what refuses a ``background: true`` request before it is admitted (a refusal costs no
        token count): the 400 for one not stored, else :meth:`check_room`'s."""
        if not store:
            raise background_error("Background responses must be stored: 'background: true' requires 'store: true'.", param="background", code="invalid_value")
        self.check_room(scope)

    def check_room(self, scope: str) -> None:
        """Raise the 429 for a key (``scope``) or a server already running its most background responses."""
        if self._closing:
            raise OpenAIError(503, "The server is shutting down.", type="server_error", code="server_shutdown", headers={"retry-after": "1"})
        if self._per_scope.get(scope, 0) >= self._max_per_key:
            raise _too_many("for this API key", self._max_per_key)
        if len(self._runs) >= self._max_total:
            raise _too_many("on this server", self._max_total)

    async def start(self, turn: BackgroundTurn[_Fed], events: AsyncGenerator[_Fed, None], *, stream: bool) -> dict[str, Any] | AsyncIterator[bytes]:
        """Store ``turn`` as queued, take its request's end over and run it; the queued response,
        or for ``stream`` the events as they come (following the run's replay log)."""
        self.check_room(turn.scope)
        queued = turn.snapshot("queued")
        await turn.keep(queued, running=True)
        # From here on nothing may fail before the task owns the request's end.
        heir = turn.info.hand_off()
        heir.status = 200
        turn.info = heir
        run = _Run(turn, _Replay() if stream else None)
        key = (turn.scope, turn.response_id)
        self._runs[key] = run
        self._per_scope[turn.scope] = self._per_scope.get(turn.scope, 0) + 1
        run.task = asyncio.get_running_loop().create_task(self._drive(run, events), name=f"background {turn.response_id}")
        if run.replay is None:
            return queued
        return run.replay.follow(-1)

    def follow(self, scope: str, response_id: str, starting_after: int) -> AsyncIterator[bytes] | None:
        """The events of a streamed run still going in this process, after ``starting_after``; None otherwise."""
        run = self._runs.get((scope, response_id))
        if run is None or run.replay is None:
            return None
        return run.replay.follow(starting_after)

    async def cancel(self, scope: str, response_id: str) -> bool:
        """Stop the run (the upstream call is closed) and wait until it stored ``cancelled``;
        False when this process runs no such response (finished, another key's, unknown)."""
        run = self._runs.get((scope, response_id))
        if run is None:
            return False
        self._stop(run, _CANCELLED)
        # Not ``await task``: a cancel request cut by its client would cancel the run's settling too.
        await run.done.wait()
        return True

    async def close(self) -> None:
        """Shutdown: every run is stopped and stored ``failed`` (the server went away), then booked."""
        self._closing = True
        runs = list(self._runs.values())
        for run in runs:
            self._stop(run, _SHUTDOWN)
        if runs:
            waits = [asyncio.ensure_future(run.done.wait()) for run in runs]
            _, pending = await asyncio.wait(waits, timeout=_SHUTDOWN_WAIT_SECONDS)
            for waiting in pending:
                waiting.cancel()
            log.info("stopped %d background responses at shutdown", len(runs))

    @staticmethod
    def _stop(run: _Run, why: tuple[int, str]) -> None:
        task = run.task
        if task is None or task.done() or run.stopped is not None:
            return
        run.stopped = why
        # Before the cancellation lands: the turn estimates the usage of a run cut short.
        run.turn.info.status, run.turn.info.error_code = why
        task.cancel()

    async def _drive(self, run: _Run, events: AsyncGenerator[Any, None]) -> None:
        turn = run.turn
        info = turn.info
        try:
            await turn.keep(turn.snapshot("in_progress"), running=True)
            if run.replay is None:
                try:
                    await turn.answer(events)
                except OpenAIError as err:
                    info.status, info.error_code = err.status, err.code or "upstream_error"
                    await turn.keep(turn.snapshot("failed", failure_error(err)))
            else:
                async for chunk in turn.sse(events):
                    run.replay.add(chunk)
        except asyncio.CancelledError:
            # Ours (cancel or shutdown): settle and end normally, the task has nothing above it.
            await events.aclose()
            shutdown = run.stopped == _SHUTDOWN
            await self._settle(turn, "failed" if shutdown else "cancelled", _SHUTDOWN_ERROR if shutdown else None)
        except Exception as exc:  # a run must always settle and be booked
            log.exception("background response %s failed", turn.response_id)
            info.status, info.error_code = 500, "server_error"
            await events.aclose()
            await self._settle(turn, "failed", {"code": "server_error", "message": f"The server failed while making this response ({type(exc).__name__})."})
        finally:
            if run.replay is not None:
                run.replay.close()
            self._forget(turn)
            try:
                await self._gate.release(info)
            finally:
                run.done.set()

    @staticmethod
    async def _settle(turn: BackgroundTurn[Any], status: str, error: dict[str, Any] | None) -> None:
        try:
            await turn.keep(turn.snapshot(status, error))
        except Exception:  # the release after this must still happen
            log.exception("could not store background response %s as %s", turn.response_id, status)

    def _forget(self, turn: BackgroundTurn[Any]) -> None:
        self._runs.pop((turn.scope, turn.response_id), None)
        left = self._per_scope.get(turn.scope, 1) - 1
        if left > 0:
            self._per_scope[turn.scope] = left
        else:
            self._per_scope.pop(turn.scope, None)
