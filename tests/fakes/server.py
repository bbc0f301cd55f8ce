"""The real toolrelay app under uvicorn, in a background thread, for end-to-end tests.

::

    settings = load_settings(write_toml(tmp_path / "c.toml", {...}), environ={})
    with run_toolrelay(settings) as relay:
        client = openai.OpenAI(base_url=relay.base_url, api_key="sk-test", max_retries=0)

:func:`run_toolrelay` builds the ASGI app with :func:`app.server.create_app`,
serves it with uvicorn (uvloop + httptools when installed, lifespan on, so the
providers, agent and stores start exactly as in production) on
``127.0.0.1:<free port>``, and returns once ``GET /health`` answers 200.
:func:`relay_config` builds the usual settings tree around a
:class:`~fakes.upstream.FakeUpstream`.
"""

from __future__ import annotations

import math
import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from toolrelay.app.cli import uvicorn_options
from toolrelay.app.config import Settings, load_settings
from toolrelay.app.server import create_app

__all__ = ["RunningServer", "closed_port", "load_toml_settings", "relay_config", "run_toolrelay", "to_toml", "write_toml"]


# ---------------------------------------------------------------------- TOML


def _toml_key(key: str) -> str:
    if key and all(c.isalnum() or c in "_-" for c in key):
        return key
    return _toml_value(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
        return f'"{escaped}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def to_toml(tree: dict[str, Any]) -> str:
    """A TOML document for a nested dict (tables become ``[a.b]`` sections; ``None`` values are skipped)."""
    lines: list[str] = []

    def emit(table: dict[str, Any], prefix: tuple[str, ...]) -> None:
        scalars = {k: v for k, v in table.items() if v is not None and not isinstance(v, dict)}
        tables = {k: v for k, v in table.items() if isinstance(v, dict)}
        if prefix and (scalars or not tables):
            lines.append("[" + ".".join(_toml_key(p) for p in prefix) + "]")
        for key, value in scalars.items():
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
        if scalars or (prefix and not tables):
            lines.append("")
        for key, value in tables.items():
            emit(value, (*prefix, key))

    emit(tree, ())
    return "\n".join(lines) + "\n"


def write_toml(path: str | Path, tree: dict[str, Any]) -> Path:
    """Write ``tree`` as TOML to ``path`` and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_toml(tree), encoding="utf-8")
    return path


def load_toml_settings(path: str | Path, tree: dict[str, Any]) -> Settings:
    """Write ``tree`` to ``path`` and load it the way the server does (no environment)."""
    return load_settings(write_toml(path, tree), environ={})


def closed_port() -> tuple[int, socket.socket]:
    """A local port on which connections are refused, and the socket holding it.

    The socket is bound but never listens, so nothing else can take the port
    while the caller keeps the socket open; a connect gets ECONNREFUSED.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock.getsockname()[1], sock


def relay_config(
    upstream_base_url: str,
    data_dir: str | Path,
    *,
    upstream_models: list[str] | None = None,
    aliases: dict[str, str] | None = None,
    extra_upstreams: dict[str, dict[str, Any]] | None = None,
    server: dict[str, Any] | None = None,
    **sections: Any,
) -> dict[str, Any]:
    """The settings tree of a relay with one ``openai``-kind upstream named ``fake``.

    ``upstream_models`` (default ``["fake-model", "fake-tools"]``) are served by
    ``upstream_base_url`` with the API key ``sk-upstream-secret``;
    ``extra_upstreams`` adds more ``[upstreams.<name>]`` tables; ``server``
    entries override ``[server]`` (``data_dir`` is set, access log on); any
    other keyword becomes a top-level section (``agent={...}``,
    ``auth={...}``, ``models={"fake-model": {"context_window": 100}}``,
    ``default_model="..."``).
    """
    tree: dict[str, Any] = {
        "server": {"data_dir": str(data_dir), "access_log": True, **(server or {})},
        "upstreams": {
            "fake": {
                "kind": "openai",
                "base_url": upstream_base_url,
                "api_key": "sk-upstream-secret",
                "models": list(upstream_models or ["fake-model", "fake-tools"]),
                "timeout": 30.0,
                "connect_timeout": 5.0,
            },
            **(extra_upstreams or {}),
        },
    }
    if aliases:
        tree["aliases"] = dict(aliases)
    tree.update({k: v for k, v in sections.items() if v is not None})
    return tree


# ---------------------------------------------------------------------- server


class RunningServer:
    """toolrelay serving on ``127.0.0.1:<port>`` from a daemon thread.

    Attributes: :attr:`settings`, :attr:`services` (the live
    :class:`app.services.Services`: router, gate, agent...), :attr:`port`,
    :attr:`base_url` (``http://127.0.0.1:<port>/v1``, for OpenAI clients),
    :attr:`root_url` (no ``/v1``); :meth:`url` builds absolute URLs. Use
    :meth:`stop` or the context manager to shut it down (lifespan shutdown
    runs, so providers and stores close).
    """

    def __init__(self, settings: Settings, *, startup_timeout: float = 60.0) -> None:
        self.settings = settings
        self.startup_timeout = startup_timeout
        self.app, self.services = create_app(settings)
        self.port: int | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._error: list[BaseException] = []

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return self.root_url + "/v1"

    def url(self, path: str) -> str:
        """Absolute URL for ``path`` (``"/v1/models"``, ``"/health"``)."""
        return self.root_url + (path if path.startswith("/") else "/" + path)

    def start(self) -> RunningServer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        # Served as `toolrelay serve` serves (uvicorn_options), on our socket, with a shorter shutdown.
        options = {**uvicorn_options(self.settings.server), "timeout_graceful_shutdown": 3, "timeout_keep_alive": 30}
        config = uvicorn.Config(self.app, **options)
        server = uvicorn.Server(config)
        self._server = server

        def run() -> None:
            try:
                server.run(sockets=[sock])
            except BaseException as exc:  # noqa: BLE001 - reported by start()
                self._error.append(exc)
            finally:
                sock.close()

        self._thread = threading.Thread(target=run, name=f"toolrelay-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + self.startup_timeout
        with httpx.Client(timeout=5.0) as http:
            while True:
                if not self._thread.is_alive():
                    raise RuntimeError(f"toolrelay failed to start: {self._error[0] if self._error else 'server thread exited (lifespan startup failed?)'}")
                if server.started:
                    try:
                        if http.get(self.url("/health")).status_code == 200:
                            return self
                    except httpx.HTTPError:
                        pass
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"toolrelay did not answer /health within {self.startup_timeout} s")
                time.sleep(0.02)

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.should_exit = True
        thread.join(20)
        if thread.is_alive():
            server.force_exit = True
            thread.join(5)
        self._server = None
        self._thread = None

    def __enter__(self) -> RunningServer:
        return self if self._thread is not None else self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def run_toolrelay(settings: Settings, *, startup_timeout: float = 60.0) -> RunningServer:
    """Start toolrelay for ``settings`` and return it once ``/health`` answers; call ``.stop()`` when done."""
    return RunningServer(settings, startup_timeout=startup_timeout).start()
