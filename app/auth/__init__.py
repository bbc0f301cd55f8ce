"""API keys, per-key limits and budgets, and the usage ledger (issue #6).

Modules, one concern each:

- :mod:`.settings`    typed ``[auth]``, ``[limits]``, ``[pricing]``, ``[redis]``
- :mod:`.keyformat`   key format, hashing, masking
- :mod:`.keystore`    keys in SQLite, mirrored in memory (the ``Keys`` protocol)
- :mod:`.pg_keystore` keys in PostgreSQL, mirrors kept current across hosts by LISTEN/NOTIFY
- :mod:`.keyspec`     validation of new keys (CLI and admin API)
- :mod:`.access`      which model ids a key may use
- :mod:`.limiter`     sliding-window limits, slots, spend; in-process backend
- :mod:`.redis_backend` the same, shared through Redis
- :mod:`.pricing`     per-model prices and request cost
- :mod:`.periods`     budget periods
- :mod:`.ledger`      the usage ledger (queue + writer thread)
- :mod:`.pg_ledger`   the same writer into PostgreSQL, every host's rows in one table
- :mod:`.gate`        :class:`AuthGate`, the :class:`app.gate.Gate` that ties them together
- :mod:`.admin`       ``/admin/keys`` and ``/admin/usage``
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from toolrelay.app.auth.gate import AuthGate
from toolrelay.app.auth.keystore import Keys, KeyStore
from toolrelay.app.auth.ledger import Ledger
from toolrelay.app.auth.limiter import LimitBackend, MemoryBackend
from toolrelay.app.auth.pricing import PriceTable
from toolrelay.app.auth.settings import GateSettings
from toolrelay.app.config import Settings

__all__ = ["AuthGate", "build_gate", "build_stores", "keys_path", "usage_path"]


def keys_path(settings: Settings) -> Path:
    return Path(settings.server.data_dir) / "keys.db"


def usage_path(settings: Settings) -> Path:
    return Path(settings.server.data_dir) / "usage.db"


def build_backend(config: GateSettings) -> LimitBackend:
    if config.redis.url:
        from toolrelay.app.auth.redis_backend import RedisBackend

        return RedisBackend(
            config.redis.url,
            prefix=config.redis.prefix,
            slot_ttl_seconds=config.limits.slot_ttl_seconds,
            socket_timeout=config.redis.socket_timeout,
            connect_timeout=config.redis.connect_timeout,
        )
    return MemoryBackend(slot_ttl_seconds=config.limits.slot_ttl_seconds)


def build_stores(settings: Settings, database: Any) -> tuple[Keys, Ledger | None]:
    """The key store and the ledger (None with ``auth.ledger = false``) in the shared PostgreSQL database."""
    from toolrelay.app.auth.pg_keystore import PgKeyStore
    from toolrelay.app.auth.pg_ledger import PgLedger
    from toolrelay.app.database import host_name

    db = settings.database
    keys = PgKeyStore(database, db.url or "", cache_seconds=db.key_cache_seconds, timeout=db.connect_timeout_seconds)
    if not settings.auth.ledger:
        return keys, None
    ledger = PgLedger(
        database,
        host=host_name(db),
        flush_seconds=settings.auth.ledger_flush_seconds,
        max_queued_rows=db.ledger_buffer_rows,
        timeout=db.connect_timeout_seconds,
    )
    return keys, ledger


def build_gate(settings: Settings, tokens: Any, *, force_auth: bool, database: Any = None) -> AuthGate:
    """The gate for ``settings``; ``tokens`` is the server's :class:`app.tokens.TokenCounter`.

    ``force_auth``: the server binds a public address without
    ``allow_unauthenticated_public`` (:class:`toolrelay.app.bind.Exposure`).
    ``database``: the shared PostgreSQL pool (``Services.database``), or None for SQLite files.
    """
    config = GateSettings.of(settings)
    local = frozenset(name for name, upstream in settings.upstreams.items() if upstream.kind == "local")
    keys, ledger = build_stores(settings, database) if database is not None else (KeyStore(keys_path(settings)), None)
    if database is None and config.auth.ledger:
        ledger = Ledger(usage_path(settings), flush_seconds=config.auth.ledger_flush_seconds, max_queued_rows=config.auth.ledger_max_queued_rows)
    return AuthGate(
        config=config,
        keys=keys,
        backend=build_backend(config),
        prices=PriceTable(config.pricing, local),
        ledger=ledger,
        tokens=tokens,
        public_bind=force_auth,
    )
