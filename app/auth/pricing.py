"""What a request cost: a price per model (USD per million tokens) applied to its real usage.

Lookup order for a route: the ``[pricing.models]`` table (exact id, then the
longest matching ``*`` pattern) by the served id, then by the upstream's model
name; then, for ``openai``, ``anthropic`` and ``gemini`` upstreams, the built-in table below by
longest prefix (so dated snapshots like ``gpt-4o-2024-08-06`` price as
``gpt-4o``); then ``[pricing.default]``. A ``local`` upstream is free unless
listed explicitly. Costs are kept as integer nano-dollars so sums over
millions of requests, and across workers in Redis, do not drift.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from toolrelay.app.auth.settings import ModelPrice, PricingSettings
from toolrelay.app.usage import RequestUsage

NANO = 1_000_000_000

# USD per 1M tokens (input, output, cached input), OpenAI list prices as of 2025.
BUILTIN_PRICES: dict[str, tuple[float, float, float | None]] = {
    "gpt-5": (1.25, 10.00, 0.125),
    "gpt-5-mini": (0.25, 2.00, 0.025),
    "gpt-5-nano": (0.05, 0.40, 0.005),
    "gpt-5-chat": (1.25, 10.00, 0.125),
    "gpt-4.1": (2.00, 8.00, 0.50),
    "gpt-4.1-mini": (0.40, 1.60, 0.10),
    "gpt-4.1-nano": (0.10, 0.40, 0.025),
    "gpt-4.5": (75.00, 150.00, 37.50),
    "gpt-4o": (2.50, 10.00, 1.25),
    "gpt-4o-mini": (0.15, 0.60, 0.075),
    "chatgpt-4o": (5.00, 15.00, None),
    "gpt-4-turbo": (10.00, 30.00, None),
    "gpt-4": (30.00, 60.00, None),
    "gpt-3.5-turbo": (0.50, 1.50, None),
    "o1": (15.00, 60.00, 7.50),
    "o1-mini": (1.10, 4.40, 0.55),
    "o1-pro": (150.00, 600.00, None),
    "o3": (2.00, 8.00, 0.50),
    "o3-mini": (1.10, 4.40, 0.55),
    "o3-pro": (20.00, 80.00, None),
    "o4-mini": (1.10, 4.40, 0.275),
    # Anthropic list prices (platform.claude.com/docs/en/about-claude/pricing, read 2026):
    # base input, output, cache hits. Cache writes (1.25x input for 5 minutes) are
    # priced as plain input, which this table has no column for.
    "claude-opus-4-6": (5.00, 25.00, 0.50),
    "claude-opus-4-5": (5.00, 25.00, 0.50),
    "claude-opus-4-1": (15.00, 75.00, 1.50),
    "claude-opus-4": (15.00, 75.00, 1.50),
    "claude-sonnet-4-6": (3.00, 15.00, 0.30),
    "claude-sonnet-4-5": (3.00, 15.00, 0.30),
    "claude-sonnet-4": (3.00, 15.00, 0.30),
    "claude-3-7-sonnet": (3.00, 15.00, 0.30),
    "claude-haiku-4-5": (1.00, 5.00, 0.10),
    "claude-3-5-haiku": (0.80, 4.00, 0.08),
    "claude-3-opus": (15.00, 75.00, 1.50),
    "claude-3-haiku": (0.25, 1.25, 0.03),
    # Gemini API paid-tier list prices (ai.google.dev/gemini-api/docs/pricing, read December 2025),
    # text input, output (thinking included), context-cache reads. Pro models cost more
    # for prompts over 200k tokens (2.5 Pro: 2.50/15.00); this table prices every prompt
    # at the lower tier, so list the model in [pricing.models] if long prompts are common.
    "gemini-3-pro": (2.00, 12.00, 0.20),
    "gemini-3-flash": (0.50, 3.00, 0.05),
    "gemini-2.5-pro": (1.25, 10.00, 0.125),
    "gemini-2.5-flash": (0.30, 2.50, 0.03),
    "gemini-2.5-flash-lite": (0.10, 0.40, 0.01),
    "gemini-2.0-flash": (0.10, 0.40, 0.025),
    "gemini-2.0-flash-lite": (0.075, 0.30, None),
    "gemini-embedding-001": (0.15, 0.00, None),
}

FREE = ModelPrice()


class Price:
    """One model's price, in nano-dollars per token (exact for any per-million price with 3 decimals)."""

    __slots__ = ("input", "output", "cached", "free")

    def __init__(self, price: ModelPrice) -> None:
        self.input = price.input * 1000.0
        self.output = price.output * 1000.0
        self.cached = (price.cached_input if price.cached_input is not None else price.input) * 1000.0
        self.free = not (price.input or price.output or price.cached_input)

    def cost_nano(self, usage: Mapping[str, Any] | None) -> int:
        if not usage or self.free:
            return 0
        prompt = _tokens(usage.get("prompt_tokens"))
        completion = _tokens(usage.get("completion_tokens"))
        cached = 0
        details = usage.get("prompt_tokens_details")
        if isinstance(details, Mapping):
            cached = min(prompt, _tokens(details.get("cached_tokens")))
        return round((prompt - cached) * self.input + cached * self.cached + completion * self.output)

    def usage_nano(self, usage: RequestUsage) -> int:
        """:meth:`cost_nano` of a request's :class:`app.usage.RequestUsage` (its counts are already clean)."""
        if self.free:
            return 0
        cached = usage.cached_tokens
        return round((usage.prompt_tokens - cached) * self.input + cached * self.cached + usage.completion_tokens * self.output)

    def estimate_nano(self, prompt_tokens: int, completion_tokens: int) -> int:
        return round(prompt_tokens * self.input + completion_tokens * self.output)


def _tokens(value: Any) -> int:
    """A token count from an upstream's usage object, which is not always well-formed."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _pattern(p: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in p.split("*")))


class PriceTable:
    def __init__(self, settings: PricingSettings, local_upstreams: frozenset[str] = frozenset()) -> None:
        self._exact = {k: Price(v) for k, v in settings.models.items() if "*" not in k}
        # Longest pattern first: the most specific wins.
        self._patterns = [(_pattern(k), Price(v)) for k, v in sorted(settings.models.items(), key=lambda kv: -len(kv[0])) if "*" in k]
        self._builtin = settings.builtin
        self._builtin_prices = sorted(BUILTIN_PRICES.items(), key=lambda kv: -len(kv[0]))
        self._default = Price(settings.default)
        self._free = Price(FREE)
        self._local = local_upstreams
        self._cache: dict[tuple[str, str, str], Price] = {}

    def for_route(self, route: Any) -> Price:
        """The price of a :class:`app.providers.router.Route` (cached: a handful of models per server)."""
        provider = route.provider.name
        cache_key = (route.model_id, route.upstream_model, provider)
        price = self._cache.get(cache_key)
        if price is None:
            price = self.lookup(route.model_id, route.upstream_model, local=provider in self._local)
            if len(self._cache) < 10_000:
                self._cache[cache_key] = price
        return price

    def lookup(self, model_id: str, upstream_model: str | None = None, *, local: bool = False) -> Price:
        names = [model_id] if not upstream_model or upstream_model == model_id else [model_id, upstream_model]
        for name in names:
            price = self._exact.get(name)
            if price is not None:
                return price
        for name in names:
            for pattern, price in self._patterns:
                if pattern.fullmatch(name):
                    return price
        if local:
            return self._free
        if self._builtin:
            for name in names:
                base = name.rsplit("/", 1)[-1].lower()  # "openai/gpt-4o" prices as "gpt-4o"
                for prefix, (inp, out, cached) in self._builtin_prices:
                    if base == prefix or base.startswith(prefix + "-"):
                        return Price(ModelPrice(input=inp, output=out, cached_input=cached))
        return self._default
