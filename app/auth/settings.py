"""The gate's view of the ``[auth]``, ``[limits]``, ``[pricing]`` and ``[redis]`` sections.

The sections are declared (and checked, the admin key included) with the rest
of the settings tree in :mod:`toolrelay.app.settings`; they are re-exported
here for the modules of this package.
"""

from __future__ import annotations

import msgspec

from toolrelay.app.settings import (
    MIN_ADMIN_KEY_CHARS,
    AuthSettings,
    LimitSettings,
    ModelPrice,
    PricingSettings,
    RedisSettings,
    Settings,
)

__all__ = [
    "BUDGET_PERIODS",
    "MIN_ADMIN_KEY_CHARS",
    "AuthSettings",
    "GateSettings",
    "LimitSettings",
    "ModelPrice",
    "PricingSettings",
    "RedisSettings",
]

BUDGET_PERIODS: tuple[str, ...] = ("daily", "weekly", "monthly", "total")


class GateSettings(msgspec.Struct, frozen=True, kw_only=True):
    auth: AuthSettings
    limits: LimitSettings
    pricing: PricingSettings
    redis: RedisSettings

    @property
    def admin_key(self) -> str | None:
        return self.auth.admin_key

    @classmethod
    def of(cls, settings: Settings) -> GateSettings:
        return cls(auth=settings.auth, limits=settings.limits, pricing=settings.pricing, redis=settings.redis)
