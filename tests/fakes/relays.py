"""The settings trees of the suites' relays, and a pool that starts and stops them.

Each suite runs the real toolrelay (:func:`fakes.server.run_toolrelay`) in
front of the session :class:`~fakes.upstream.FakeUpstream`; what differs is
the settings tree. The trees are built here, once each, and the conftests'
fixtures are thin wrappers around them:

======================  ==============================================================
tree                    used by
======================  ==============================================================
:func:`session_tree`    ``relay`` / ``relay_factory`` (tests/conftest.py): aliases,
                        a slow and a dead upstream, a 4 MiB body limit
:func:`auth_tree`       tests/auth, tests/security: admin key, prices, a cost cap
:func:`agent_tree`      tests/agent: ``agent/...`` models, a constrained model
:func:`e2e_tree`        tests/e2e: every built-in tool on, a private sandbox uid pool
======================  ==============================================================

:class:`RelayPool` starts relays in a directory (``toolrelay<n>.toml``,
``data<n>``) and stops them all on exit.
"""

from __future__ import annotations

import itertools
import os
import threading
from pathlib import Path
from typing import Any, Self

from fakes.admin import ADMIN_KEY
from fakes.server import RunningServer, load_toml_settings, relay_config, run_toolrelay
from fakes.upstream import FakeUpstream

__all__ = [
    "AGENT_MODELS",
    "COST_CAP_USD",
    "FAKE_MODELS",
    "MAX_BODY_BYTES",
    "MAX_TOOL_OUTPUT_CHARS",
    "PRICING",
    "SLOW_TIMEOUT",
    "UPSTREAM_KEY",
    "RelayPool",
    "agent_tree",
    "auth_tree",
    "e2e_tree",
    "session_tree",
    "start_relay",
]

UPSTREAM_KEY = "sk-upstream-secret"  # what relay_config gives the ``fake`` upstream
FAKE_MODELS = ["fake-model", "fake-tools", "org/fake-slash"]
SLOW_TIMEOUT = 1.5
MAX_BODY_BYTES = 4 * 1024 * 1024

# fake-model: cheap and realistic; fake-tools: one dollar per token, so one request blows a small budget.
PRICING = {
    "models": {
        "fake-model": {"input": 1.0, "output": 2.0},
        "fake-tools": {"input": 1_000_000.0, "output": 1_000_000.0},
    }
}
COST_CAP_USD = 1000.0

AGENT_MODELS = ["fake-model", "fake-tools", "fake-constrained"]
MAX_TOOL_OUTPUT_CHARS = 2000

E2E_MODELS = ["fake-model", "fake-tools"]


def start_relay(workdir: Path, tree: dict[str, Any], name: str = "toolrelay") -> RunningServer:
    """Write ``tree`` to ``workdir/<name>.toml``, load it as the server does and start a relay on it."""
    return run_toolrelay(load_toml_settings(workdir / f"{name}.toml", tree))


class RelayPool:
    """Relays started for one test (or module) in ``workdir``; all stopped on exit.

    ``data_dir()`` names a fresh data directory for the next tree;
    ``start(tree)`` writes ``toolrelay<n>.toml`` and starts the relay.
    """

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.started: list[RunningServer] = []
        self._data_dirs = itertools.count()

    def data_dir(self) -> Path:
        return self.workdir / f"data{next(self._data_dirs)}"

    def start(self, tree: dict[str, Any]) -> RunningServer:
        server = start_relay(self.workdir, tree, name=f"toolrelay{len(self.started)}")
        self.started.append(server)
        return server

    def stop(self) -> None:
        while self.started:
            self.started.pop().stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def session_tree(fake: FakeUpstream, data_dir: Path, dead_port: int, **overrides: Any) -> dict[str, Any]:
    """The session relay's tree (tests/conftest.py docstring); keywords replace its :func:`relay_config` keywords."""
    options: dict[str, Any] = {
        "upstream_models": list(FAKE_MODELS),
        "aliases": {"gpt-4": "fake-model"},
        "extra_upstreams": {
            "slow": {
                "kind": "openai",
                "base_url": fake.base_url,
                "models": ["slow-model"],
                "timeout": SLOW_TIMEOUT,
                "connect_timeout": SLOW_TIMEOUT,
            },
            "dead": {
                "kind": "openai",
                "base_url": f"http://127.0.0.1:{dead_port}/v1",
                "models": ["dead-model"],
                "connect_timeout": 2.0,
                "timeout": 5.0,
            },
        },
        "server": {"max_body_bytes": MAX_BODY_BYTES, "max_messages": 2048},
    }
    options.update(overrides)
    return relay_config(fake.base_url, data_dir, **options)


def auth_tree(fake: FakeUpstream, data_dir: Path, **sections: Any) -> dict[str, Any]:
    """Auth on from the start (:data:`~fakes.admin.ADMIN_KEY`), :data:`PRICING` and a per-request cost cap."""
    options: dict[str, Any] = {
        "upstream_models": list(FAKE_MODELS),
        "aliases": {"gpt-4": "fake-model"},
        # These suites share one relay and send many wrong keys on purpose from
        # one address; the brute-force guard has its own tests (tests/security).
        "auth": {
            "admin_key": ADMIN_KEY,
            "ledger_flush_seconds": 0.05,
            "max_failed_auth": 10_000,
        },
        "pricing": PRICING,
        "limits": {"max_request_cost_usd": COST_CAP_USD},
    }
    options.update(sections)
    return relay_config(fake.base_url, data_dir, **options)


def agent_tree(
    fake: FakeUpstream,
    data_dir: Path,
    *,
    agent: dict[str, Any] | None = None,
    **keywords: Any,
) -> dict[str, Any]:
    """:data:`AGENT_MODELS` upstream (``fake-constrained`` with constrained tool calling), built-in ``current_time``."""
    tree = relay_config(fake.base_url, data_dir, **keywords)
    tree["upstreams"]["fake"]["models"] = list(AGENT_MODELS)
    tree["agent"] = {
        "builtin_tools": ["current_time"],
        "max_tool_output_chars": MAX_TOOL_OUTPUT_CHARS,
        **(agent or {}),
    }
    tree["models"] = {"fake-constrained": {"tool_calling": "constrained"}}
    return tree


# Each e2e relay gets a sandbox uid pool of its own: a relay's start-up SIGKILLs
# every live process of its pool, so sharing one with another server (the
# session relay uses the default 60000, the sandbox suite 61000-61300, a
# colleague's concurrent run of the suite...) would kill foreign runs. The pid
# spreads concurrent sessions over 62000-63999 (room for 20 relays, two uids
# each, per session).
_uid_bases = itertools.count(62000 + (os.getpid() % 50) * 40, 2)
_uid_lock = threading.Lock()


def _next_uid_base() -> int:
    with _uid_lock:
        return next(_uid_bases)


def e2e_tree(fake: FakeUpstream, data_dir: Path, web_url: str, **sections: Any) -> dict[str, Any]:
    """Every built-in tool on, searching and fetching from ``web_url``.

    Keyword sections replace the defaults wholesale, except ``sandbox``
    (merged, so the uid pool stays private).
    """
    tree_sections: dict[str, Any] = {
        "agent": {
            "max_wall_seconds": 60,
            "tool_timeout_seconds": 30,
            "keepalive_seconds": 5,
        },
        "web_search": {
            "backend": "searxng",
            "searxng_url": web_url,
            "timeout": 5.0,
            "cache_ttl_seconds": 0,
        },
        # The local web server listens on an ephemeral port: every port allowed here.
        "fetch_page": {
            "allow_networks": ["127.0.0.1/32"],
            "allowed_ports": [],
            "timeout": 5.0,
        },
        "memory": {"enabled": True},
    }
    sandbox = {
        "sandbox_uid_base": _next_uid_base(),
        "wall_seconds": 10.0,
        "max_concurrent": 2,
        **(sections.pop("sandbox", None) or {}),
    }
    tree_sections.update(sections)
    tree_sections["sandbox"] = sandbox
    return relay_config(fake.base_url, data_dir, upstream_models=list(E2E_MODELS), **tree_sections)
