"""``toolrelay serve`` as a real process, for what only a process shows: its stderr, SIGTERM, TLS."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from fakes.server import relay_config, write_toml

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServeProcess:
    """``python -m toolrelay.app serve`` in front of ``upstream_url``, stderr to :attr:`log_path`.

    ``tree``: a whole settings tree instead of :func:`relay_config`'s (``upstream_url`` and the sections are then unused).
    """

    def __init__(
        self, tmp: Path, upstream_url: str, *args: str, server: dict[str, Any] | None = None, tree: dict[str, Any] | None = None, **sections: Any
    ) -> None:
        self.port = free_port()
        self.log_path = tmp / "toolrelay.log"
        config = write_toml(tmp / "toolrelay.toml", tree if tree is not None else relay_config(upstream_url, tmp / "data", server=server, **sections))
        scheme = "https" if "--ssl-certfile" in args or (server or {}).get("ssl_certfile") else "http"
        self.root_url = f"{scheme}://127.0.0.1:{self.port}"
        self.base_url = self.root_url + "/v1"
        env = {k: v for k, v in os.environ.items() if not k.startswith("TOOLRELAY_")}
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "toolrelay.app", "serve", "--config", str(config), "--port", str(self.port), *args],
            cwd=tmp,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )

    def wait_ready(self, verify: Any = True, timeout: float = 60.0) -> ServeProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"toolrelay exited with {self.process.returncode}: {self.log_text()}")
            try:
                if httpx.get(self.root_url + "/health", verify=verify, timeout=2.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"toolrelay did not answer /health: {self.log_text()}")

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM, then the exit status."""
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        finally:
            self._log.close()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._log.close()

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def __enter__(self) -> ServeProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()
