"""Typed settings for the ``[auth]``, ``[limits]``, ``[pricing]`` and ``[redis]`` sections.

:mod:`app.config` keeps these sections as plain tables so it need not import
this package; :func:`load_auth_settings` converts them (and checks them) in
one place.
"""

from __future__ import annotations

import os
from typing import Literal, Mapping

import msgspec

from toolrelay.app.config import ConfigError, Settings, section

# A shorter admin-key variable than TOOLRELAY_AUTH__ADMIN_KEY, for container setups.
ADMIN_KEY_ENV = "TOOLRELAY_ADMIN_KEY"
MIN_ADMIN_KEY_CHARS = 16


class AuthSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    # Enables the /admin/* API (Bearer <admin_key>); it also turns auth on.
    admin_key: str | None = None
    # Require an API key even while no key exists (every request then gets 401
    # until one is created). Auth is on anyway once any key exists, when an
    # admin key is set, or when the server binds a non-loopback address.
    required: bool = False
    # Record one usage row per chat request in <data_dir>/usage.db.
    ledger: bool = True
    # How often the background writer commits a batch of ledger rows.
    ledger_flush_seconds: float = 0.25
    # Most ledger rows held in memory while the writer is behind (disk stalled,
    # database locked); beyond it the oldest unwritten rows are dropped, counted
    # and logged, so a stalled disk cannot grow the process without bound.
    ledger_max_queued_rows: int = 100_000
    # Brute-force guard (app/auth/throttle.py): after this many wrong
    # credentials (admin key or API key) from one client address within
    # failed_auth_window_seconds, that address gets 429 for the same time
    # without its credential being checked. 0 turns the guard off.
    max_failed_auth: int = 10
    failed_auth_window_seconds: float = 60.0


class LimitSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    # Completion tokens assumed for the TPM reservation and the cost cap when
    # a request sets neither max_completion_tokens nor max_tokens.
    completion_estimate_tokens: int = 256
    # Refuse (400 cost_cap_exceeded) a request whose worst-case cost, prompt
    # plus max_tokens at the model's price, is above this. 0 = no cap.
    max_request_cost_usd: float = 0.0
    # Limits for requests without a key (auth off), per client address. 0 = none.
    ip_rpm: int = 0
    ip_tpm: int = 0
    ip_max_parallel: int = 0
    # Take the client address from the last X-Forwarded-For hop (the one our
    # own reverse proxy appended). Only safe behind such a proxy.
    trust_forwarded_for: bool = False
    # A parallel-request slot whose release was never seen (a crash between
    # admit and release) frees itself after this long.
    slot_ttl_seconds: float = 3600.0
    # With Redis configured but unreachable: False refuses requests with 503
    # (limits and budgets stay enforced), True serves them unlimited.
    fail_open: bool = False


class ModelPrice(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """USD per one million tokens."""

    input: float = 0.0
    output: float = 0.0
    # Price of prompt tokens served from the upstream's prompt cache
    # (usage.prompt_tokens_details.cached_tokens); defaults to ``input``.
    cached_input: float | None = None


class PricingSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    # Use the built-in table of OpenAI prices (app/auth/pricing.py) for models not listed here.
    builtin: bool = True
    # Exact served/upstream model ids or ``*`` patterns ("my-org/*").
    models: dict[str, ModelPrice] = {}
    # Price of models found nowhere (local upstreams are always free unless listed).
    default: ModelPrice = ModelPrice()


class RedisSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    # e.g. "redis://127.0.0.1:6379/0"; empty: counters live in this process.
    url: str = ""
    # Namespace for every key we write, so one Redis can serve several deployments.
    prefix: str = "toolrelay"
    socket_timeout: float = 1.0
    connect_timeout: float = 2.0


class GateSettings(msgspec.Struct, frozen=True, kw_only=True):
    auth: AuthSettings
    limits: LimitSettings
    pricing: PricingSettings
    redis: RedisSettings
    admin_key: str | None


def load_auth_settings(settings: Settings, environ: Mapping[str, str] | None = None) -> GateSettings:
    auth: AuthSettings = section(settings, "auth", AuthSettings)
    limits: LimitSettings = section(settings, "limits", LimitSettings)
    pricing: PricingSettings = section(settings, "pricing", PricingSettings)
    redis: RedisSettings = section(settings, "redis", RedisSettings)
    env = os.environ if environ is None else environ
    admin_key = (auth.admin_key or env.get(ADMIN_KEY_ENV) or "").strip() or None
    if admin_key is not None and len(admin_key) < MIN_ADMIN_KEY_CHARS:
        raise ConfigError(f"auth.admin_key must be at least {MIN_ADMIN_KEY_CHARS} characters (use a random string)")
    if auth.max_failed_auth < 0 or auth.failed_auth_window_seconds <= 0:
        raise ConfigError("auth.max_failed_auth must not be negative and auth.failed_auth_window_seconds must be positive")
    if limits.completion_estimate_tokens < 0 or limits.max_request_cost_usd < 0:
        raise ConfigError("[limits] values must not be negative")
    if redis.url and not redis.url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError("redis.url must start with redis://, rediss:// or unix://")
    return GateSettings(auth=auth, limits=limits, pricing=pricing, redis=redis, admin_key=admin_key)


BudgetPeriod = Literal["daily", "weekly", "monthly", "total"]
BUDGET_PERIODS: tuple[str, ...] = ("daily", "weekly", "monthly", "total")
