"""Shared fixtures: a scripted fake upstream and a real toolrelay server in front of it.

Session-scoped (started once, cheap per test):

- ``fake_upstream``: a started :class:`fakes.upstream.FakeUpstream`.
- ``relay``: a :class:`fakes.server.RunningServer` (real uvicorn, lifespan on)
  configured by ``relay_settings``:

  ========================  ==========================================================
  model id                  served by
  ========================  ==========================================================
  ``fake-model``            upstream ``fake`` (the fake upstream), upstream name as is
  ``fake-tools``            upstream ``fake``
  ``org/fake-slash``        upstream ``fake`` (an id containing ``/``)
  ``gpt-4`` (alias)         -> ``fake-model``
  ``slow-model``            upstream ``slow``: the same fake, ``timeout = 1.5`` s
  ``dead-model``            upstream ``dead``: a local port that refuses connections
  ========================  ==========================================================

  The settings tree is :func:`fakes.relays.session_tree`; the upstream API key
  is :data:`fakes.relays.UPSTREAM_KEY`; ``[server]`` has the access log
  on, ``max_body_bytes = 4 MiB``, ``max_messages = 2048``; data lives in a
  session temp dir; auth is whatever the default is (none configured).

Per test:

- ``fake``: the session fake upstream, reset (empty queue, no responder,
  default reply, no records). Use this one, not ``fake_upstream``.
- ``client`` / ``aclient``: ``openai.OpenAI`` / ``openai.AsyncOpenAI`` on the
  relay, ``api_key="sk-test"``, ``max_retries=0``, 30 s timeout.
- ``http``: an ``httpx.Client`` with ``base_url`` = the relay's root
  (``http.post("/v1/chat/completions", json=...)``) and the same key.
- ``relay_factory``: ``relay_factory(tree_overrides...) -> RunningServer`` for a
  test that needs its own configuration (stopped at the end of the test).
- ``redis_url`` (module): a real ``redis-server`` (:mod:`fakes.redis`).
- ``postgres_server`` (session): a real PostgreSQL cluster (:mod:`fakes.postgres`);
  ``postgres_url`` (function): a fresh, empty database on it.
- ``logs``: a :class:`LogCapture` handler on the root logger at DEBUG for the
  test's duration (records from every logger and thread).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from fakes.clients import async_sdk, rest, sdk
from fakes.postgres import PostgresServer, running_postgres
from fakes.redis import running_redis
from fakes.relays import FAKE_MODELS, RelayPool, session_tree
from fakes.server import RunningServer, closed_port, load_toml_settings, run_toolrelay
from fakes.upstream import FakeUpstream


@pytest.fixture(scope="session")
def fake_upstream() -> Iterator[FakeUpstream]:
    """The session's fake upstream (prefer the ``fake`` fixture, which resets it)."""
    fake = FakeUpstream(models=list(FAKE_MODELS)).start()
    yield fake
    fake.stop()


@pytest.fixture
def fake(fake_upstream: FakeUpstream) -> Iterator[FakeUpstream]:
    """The fake upstream, reset for this test."""
    fake_upstream.reset()
    yield fake_upstream
    fake_upstream.reset()


@pytest.fixture(scope="session")
def dead_port() -> Iterator[int]:
    """A local port that refuses connections for the whole session."""
    port, sock = closed_port()
    yield port
    sock.close()


@pytest.fixture(scope="session")
def relay_settings(fake_upstream: FakeUpstream, dead_port: int, tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("relay")
    return load_toml_settings(root / "toolrelay.toml", session_tree(fake_upstream, root / "data", dead_port))


@pytest.fixture(scope="session")
def relay(relay_settings: Any) -> Iterator[RunningServer]:
    """The session's toolrelay server, in front of ``fake_upstream``."""
    with run_toolrelay(relay_settings) as server:
        yield server


@pytest.fixture
def relay_factory(fake_upstream: FakeUpstream, dead_port: int, tmp_path: Path) -> Iterator[Callable[..., RunningServer]]:
    """Start extra relays: ``relay_factory(agent={...}, server={...})`` -> RunningServer.

    Keywords are those of :func:`fakes.relays.session_tree` /
    :func:`fakes.server.relay_config` and replace the session relay's values;
    pass ``tree=`` to give a whole settings tree instead.
    """
    with RelayPool(tmp_path) as pool:

        def make(tree: dict[str, Any] | None = None, **overrides: Any) -> RunningServer:
            return pool.start(tree if tree is not None else session_tree(fake_upstream, pool.data_dir(), dead_port, **overrides))

        yield make


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server for this module (skipped without the binary unless CI requires it)."""
    with running_redis(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """A real PostgreSQL cluster for the session (skipped without the binaries unless CI requires it)."""
    with running_postgres(tmp_path_factory.mktemp("postgres")) as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """A fresh, empty database on the session's cluster."""
    return postgres_server.new_database()


@pytest.fixture
def client(relay: RunningServer) -> Iterator[openai.OpenAI]:
    with sdk(relay, timeout=30.0) as c:
        yield c


@pytest.fixture
async def aclient(relay: RunningServer) -> AsyncIterator[openai.AsyncOpenAI]:
    c = async_sdk(relay, timeout=30.0)
    try:
        yield c
    finally:
        await c.close()


@pytest.fixture
def http(relay: RunningServer) -> Iterator[httpx.Client]:
    with rest(relay) as c:
        yield c


class LogCapture(logging.Handler):
    """Collects every log record (any logger, any thread) while installed.

    ``records`` (a copy), ``texts()`` (each record's message plus its formatted
    traceback, if any), ``for_logger(name)``, and ``wait_for(predicate,
    timeout)`` for records emitted by the server thread after the response
    (the access line of a stream is written when the stream ends).
    """

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self._records: list[logging.LogRecord] = []
        self._cond = threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            record.rendered = record.getMessage()  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001 - a broken record is still a record
            record.rendered = str(record.msg)  # type: ignore[attr-defined]
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        with self._cond:
            self._records.append(record)
            self._cond.notify_all()

    @property
    def records(self) -> list[logging.LogRecord]:
        with self._cond:
            return list(self._records)

    def for_logger(self, name: str) -> list[logging.LogRecord]:
        return [r for r in self.records if r.name == name or r.name.startswith(name + ".")]

    def texts(self, exclude: tuple[str, ...] = ()) -> list[str]:
        out = []
        for r in self.records:
            if any(r.name == e or r.name.startswith(e + ".") for e in exclude):
                continue
            text = f"{r.name} {r.rendered} {r.msg!s} {r.args!r}"  # type: ignore[attr-defined]
            if r.exc_text:
                text += "\n" + r.exc_text
            if r.stack_info:
                text += "\n" + r.stack_info
            out.append(text)
        return out

    def wait_for(self, predicate: Callable[[logging.LogRecord], bool], timeout: float = 10.0) -> logging.LogRecord:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for r in self._records:
                    if predicate(r):
                        return r
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError("no matching log record; got:\n" + "\n".join(f"{r.name}: {r.rendered}" for r in self._records))  # type: ignore[attr-defined]
                self._cond.wait(remaining)


@pytest.fixture
def logs() -> Iterator[LogCapture]:
    """Capture all log records at DEBUG from every logger during the test."""
    handler = LogCapture()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
