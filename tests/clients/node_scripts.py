"""Running the Node client scripts of ``tests/node`` against a relay.

Each script builds its client the way a user would, from a base URL and a key
(``TOOLRELAY_BASE_URL``, ``TOOLRELAY_API_KEY``), runs one scenario and prints
what the program got as one JSON object. The scripts need ``node`` and
``npm ci --prefix tests/node``; without them a test skips, unless
``TOOLRELAY_REQUIRE_NODE=1`` (CI) makes that a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from fakes.clients import CLIENT_KEY
from fakes.server import RunningServer

__all__ = ["NODE_DIR", "KnownGap", "NodeFailure", "known_gap", "require_node", "run_node"]

NODE_DIR = Path(__file__).resolve().parents[1] / "node"


class NodeFailure(AssertionError):
    """A script exited non-zero: the client threw. ``stderr`` holds its error as Node printed it."""

    def __init__(self, script: str, returncode: int, stderr: str) -> None:
        super().__init__(f"{script} exited {returncode}:\n{stderr}")
        self.stderr = stderr


def require_node(*packages: str) -> str:
    """The ``node`` binary, once ``packages`` are installed in ``tests/node``; skip (or fail under CI) otherwise."""
    node = shutil.which("node")
    missing = [name for name in packages if not (NODE_DIR / "node_modules" / name / "package.json").is_file()]
    if node is None or missing:
        reason = f"the Node client tests need node and `npm ci --prefix tests/node` (missing: {'node' if node is None else ', '.join(missing)})"
        if os.environ.get("TOOLRELAY_REQUIRE_NODE") == "1":
            pytest.fail(reason + "; TOOLRELAY_REQUIRE_NODE=1 requires it")
        pytest.skip(reason)
    return node


def run_node(node: str, script: str, *args: str, relay: RunningServer, key: str = CLIENT_KEY) -> dict[str, Any]:
    """Run ``tests/node/<script> args...`` against ``relay``; its printed JSON."""
    # The clients also read OPENAI_* variables; the test's own settings only.
    env = {name: value for name, value in os.environ.items() if not name.startswith("OPENAI_")}
    env.update(TOOLRELAY_BASE_URL=relay.base_url, TOOLRELAY_API_KEY=key)
    done = subprocess.run([node, str(NODE_DIR / script), *args], capture_output=True, text=True, timeout=120, cwd=NODE_DIR, env=env, check=False)
    if done.returncode != 0:
        raise NodeFailure(script, done.returncode, done.stderr)
    return json.loads(done.stdout)


class KnownGap(AssertionError):
    """A script failed with the error of a documented gap in the relay (see :func:`known_gap`)."""


@contextmanager
def known_gap(error_text: str) -> Iterator[None]:
    """Turn a script failure whose output names ``error_text`` into :class:`KnownGap`.

    With ``@pytest.mark.xfail(raises=KnownGap, strict=True)`` the test is an
    expected failure for that reason only: any other failure still fails it,
    and once the gap is closed it passes, which strict xfail reports.
    """
    try:
        yield
    except NodeFailure as failure:
        if error_text not in failure.stderr:
            raise
        raise KnownGap(error_text) from failure
