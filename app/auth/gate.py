"""The keyed gate: who is calling (API key), may they (models, limits, budget), what did it cost.

It implements :class:`app.gate.Gate`. The request path touches only memory:
the key table is a dict (refreshed from SQLite only when ``PRAGMA
data_version`` says another connection wrote), limits are in-process
counters or one Redis round trip, and the usage row goes onto a queue that a
thread writes. State that must live from ``admit`` to ``release`` is the
:class:`Ticket` that ``admit`` returns; the handler keeps it on the request's
``RequestInfo``, and the outer ASGI layer hands both back to ``release``.

Auth is on when any key exists (revoked ones included: revoking the last key
must not open the server), when an admin key is set, when ``auth.required``
is true, or when the server binds a non-loopback address. With auth off,
requests carry no key id and the per-address limits apply.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, cast

import anyio

from toolrelay.app.auth import errors
from toolrelay.app.auth.durations import go_duration
from toolrelay.app.auth.keyformat import mask, matches, parse_key_id
from toolrelay.app.auth.keystore import ApiKey, Keys
from toolrelay.app.auth.ledger import Ledger
from toolrelay.app.auth.limiter import Ask, Decision, LimitBackend, MemoryBackend, Policy, ip_bucket, key_bucket
from toolrelay.app.auth.periods import PeriodClock
from toolrelay.app.auth.pricing import FREE, NANO, Price, PriceTable
from toolrelay.app.auth.settings import GateSettings
from toolrelay.app.auth.shared_spend import SharedSpend, SpendLedger
from toolrelay.app.auth.throttle import FailedAuthThrottle
from toolrelay.app.database import database_unavailable
from toolrelay.app.errors import OpenAIError, model_not_found
from toolrelay.app.middleware import RequestInfo
from toolrelay.app.output_ceiling import apply_output_ceiling, ceiling_field
from toolrelay.app.tokens import prompt_chars
from toolrelay.app.usage import RequestUsage

log = logging.getLogger("toolrelay.auth")

ADMIN_KEY_ID = "admin"
# The limit backend's bucket of [limits] global_rpm (keys are "k:<id>", addresses "ip:<address>").
GLOBAL_BUCKET = "g:all"
# Longer than any key we issue or any sane admin key: refuse without hashing 64 KB.
MAX_CREDENTIAL_CHARS = 1024
# Prompts with more text than this get the cheap limit checks before their
# tokens are counted (smaller ones cost less to count than a Redis round trip).
_PEEK_ABOVE_CHARS = 100_000
_FREE_PRICE = Price(FREE)


def bearer_token(scope: Mapping[str, Any]) -> str | None:
    """The credential of ``Authorization: Bearer <key>`` (scheme case-insensitive, surrounding blanks ignored)."""
    for name, value in scope.get("headers") or ():
        if name == b"authorization":
            scheme, _, rest = value.decode("latin-1").strip().partition(" ")
            if scheme.lower() != "bearer":
                return None
            return rest.strip() or None
    return None


def client_address(scope: dict[str, Any], trust_forwarded_for: bool) -> str:
    if trust_forwarded_for:
        for name, value in scope.get("headers") or ():
            if name == b"x-forwarded-for":
                # The last hop is the one our own proxy appended; earlier ones are the client's word.
                hop = value.decode("latin-1").rsplit(",", 1)[-1].strip()
                if hop:
                    return hop[:64]
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def requested_max_tokens(payload: dict[str, Any]) -> int | None:
    """The completion tokens a request allows, None when it sets none. 0 only comes from requests
    that generate nothing (embeddings): chat validation refuses it."""
    for name in ("max_completion_tokens", "max_tokens"):
        value = payload.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return None


def requested_choices(payload: dict[str, Any]) -> int:
    """``n``: the upstream writes (and bills) that many completions for one prompt."""
    value = payload.get("n")
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 1 else 1


class Ticket:
    """What ``admit`` decided: the response's rate-limit headers, what ``check_step`` and ``release`` need."""

    __slots__ = ("price", "ask", "decision", "headers", "model", "completion", "streamed", "key_id")

    def __init__(self, price: Price, model: str = "", completion: int = 0, streamed: bool = False, key_id: str | None = None) -> None:
        self.price = price
        self.ask: Ask | None = None
        self.decision: Decision | None = None
        self.headers: dict[str, str] = {}
        self.model = model  # the upstream's name, for token counts of agent steps
        self.completion = completion  # the completion tokens assumed at admission (all `n` choices)
        self.streamed = streamed
        self.key_id = key_id


def rate_headers(policy: Policy, decision: Decision) -> dict[str, str]:
    headers: dict[str, str] = {}
    if policy.rpm:
        headers["x-ratelimit-limit-requests"] = str(policy.rpm)
        headers["x-ratelimit-remaining-requests"] = str(max(0, decision.requests_remaining))
        headers["x-ratelimit-reset-requests"] = go_duration(decision.requests_reset_ms)
    if policy.tpm:
        headers["x-ratelimit-limit-tokens"] = str(policy.tpm)
        headers["x-ratelimit-remaining-tokens"] = str(max(0, decision.tokens_remaining))
        headers["x-ratelimit-reset-tokens"] = go_duration(decision.tokens_reset_ms)
    return headers


def _needs_settle(ask: Ask, tokens: int, cost_nano: int) -> bool:
    """Skip the backend (a Redis round trip) when the request left nothing to undo or book."""
    policy = ask.policy
    budgeted = policy.budget_nano is not None
    return bool(policy.max_parallel or (policy.tpm and tokens != ask.tokens) or (budgeted and (cost_nano or ask.cost_nano)))


class AuthGate:
    def __init__(
        self,
        *,
        config: GateSettings,
        keys: Keys,
        backend: LimitBackend,
        prices: PriceTable,
        ledger: Ledger | None,
        tokens: Any,
        public_bind: bool = False,
    ) -> None:
        self.config = config
        self.keys = keys
        self._model_catalogue: Callable[[], list[str]] | None = None
        self.backend = backend
        self.prices = prices
        self.ledger = ledger
        self.tokens = tokens
        self._force = bool(config.auth.required or config.admin_key or public_bind)
        self._admin_hash = hashlib.sha256(config.admin_key.encode()).digest() if config.admin_key else None
        limits = config.limits
        ip_policy = Policy(limits.ip_rpm, limits.ip_tpm, limits.ip_max_parallel)
        self._ip_policy = ip_policy if ip_policy.active else None
        self._cap_nano = round(limits.max_request_cost_usd * NANO)
        self._completion_estimate = limits.completion_estimate_tokens
        self._fail_open = limits.fail_open
        self._trust_xff = limits.trust_forwarded_for
        # [limits] max_output_tokens (0: none) and global_rpm: one `if` each per request while unset.
        self._output_ceiling = limits.max_output_tokens
        self._global_policy = Policy(limits.global_rpm) if limits.global_rpm else None
        trust_xff = limits.trust_forwarded_for
        # Wrong credentials per client address (brute force on the admin key, issue 10 item 21).
        self.auth_failures = FailedAuthThrottle(
            max_failures=config.auth.max_failed_auth,
            window_seconds=config.auth.failed_auth_window_seconds,
            address_of=lambda scope: client_address(scope, trust_xff),
        )
        self._periods = PeriodClock()
        self._policies: dict[str, tuple[ApiKey, Policy]] = {}
        self._backend_error_logged = 0.0
        self._shared_task: asyncio.Task[None] | None = None

    # -- state ---------------------------------------------------------

    @property
    def enabled(self) -> bool:
        return self._force or self.keys.any_keys

    @property
    def admin_enabled(self) -> bool:
        return self._admin_hash is not None

    def is_admin(self, token: str | None) -> bool:
        if self._admin_hash is None or not token or len(token) > MAX_CREDENTIAL_CHARS:
            return False
        return hmac.compare_digest(hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest(), self._admin_hash)

    def admin_credential(self, scope: dict[str, Any], token: str | None) -> bool:
        """:meth:`is_admin` for admin-only endpoints, throttled per address.

        Raises 429 for an address that guessed wrong too often (the token is
        not looked at); a wrong token counts as a guess unless it is a real
        API key (a key holder at the wrong door is not guessing).
        """
        if token is None:
            return False
        refusal = self.auth_failures.refusal(scope)
        if refusal is not None:
            raise refusal
        if self.is_admin(token):
            return True
        key_id = parse_key_id(token) if len(token) <= MAX_CREDENTIAL_CHARS else None
        if key_id is not None:
            self.keys.refresh(force=True)
            key = self.keys.get(key_id)
            if key is not None and (matches(token, key.key_hash) or key.accepts_previous(token, time.time())):
                return False
        self.auth_failures.failed(scope)
        return False

    def policy_for(self, key: ApiKey) -> Policy:
        cached = self._policies.get(key.id)
        if cached is not None and cached[0] is key:
            return cached[1]
        budget = round(key.budget_usd * NANO) if key.budget_usd is not None else None
        policy = Policy(key.rpm or 0, key.tpm or 0, key.max_parallel or 0, budget, key.budget_period)
        self._policies[key.id] = (key, policy)
        return policy

    def allows_model(self, info: RequestInfo, model_id: str) -> bool:
        """May the caller of ``info`` use ``model_id``? (For /v1/models listings.)"""
        key_id = info.key_id
        if key_id is None or key_id == ADMIN_KEY_ID:
            return True
        key = self.keys.get(key_id)
        return key is not None and key.access.allows(model_id)

    def use_model_catalogue(self, catalogue: Callable[[], list[str]]) -> None:
        self._model_catalogue = catalogue

    def mcp_servers_for(self, key_id: str | None) -> tuple[str, ...] | None:
        """The MCP servers whose tools the caller may use; None: every one (no key, the admin key, no allow-list).

        A key id the table does not hold gets none (fail closed): it was authenticated, so it can only be one
        removed since, and its requests are refused anyway.
        """
        if key_id is None or key_id == ADMIN_KEY_ID:
            return None
        key = self.keys.get(key_id)
        return () if key is None else key.mcp_servers

    # -- Gate protocol ---------------------------------------------------

    async def authenticate(self, request: Any, info: RequestInfo) -> None:
        keys = self.keys
        keys.refresh()
        if not (self._force or keys.any_keys):
            info.key_id = None
            return
        refusal = self.auth_failures.refusal(request.scope)  # free while no address has failed recently
        if refusal is not None:
            raise refusal
        token = bearer_token(request.scope)
        if token is None:
            raise errors.missing_key()
        if len(token) > MAX_CREDENTIAL_CHARS:
            self.auth_failures.failed(request.scope)
            raise errors.incorrect_key(mask(token))
        key_id = parse_key_id(token)
        if key_id is not None:
            key = await self._matching_key(key_id, token)
            if key is not None:
                if key.revoked_at is not None:
                    raise OpenAIError(401, f"The API key tr-{key.id} has been revoked.", type="authentication_error", code="invalid_api_key")
                if key.expires_at is not None and time.time() >= key.expires_at:
                    raise errors.expired_key(key.id)
                info.key_id = key.id
                return
        elif self.is_admin(token):
            info.key_id = ADMIN_KEY_ID
            return
        self.auth_failures.failed(request.scope)
        raise errors.incorrect_key(mask(token))

    async def _matching_key(self, key_id: str, token: str) -> ApiKey | None:
        """The key ``token`` is a secret of (current, or the previous one within its grace), or None."""
        keys = self.keys
        key = keys.get(key_id)
        if key is None and keys.fetches_missing:
            # Created on another host a moment ago, its notification still on the way: one lookup
            # (wrong guesses are throttled per address before they cost one).
            try:
                key = await anyio.to_thread.run_sync(keys.fetch, key_id)
            except Exception:  # noqa: BLE001 - the database is down: 503, not a 500
                raise database_unavailable() from None
        if key is not None and (matches(token, key.key_hash) or key.accepts_previous(token, time.time())):
            return key
        # keys.db is looked at every few milliseconds: a key created or rotated since then is read now.
        if keys.refresh(force=True):
            key = keys.get(key_id)
            if key is not None and (matches(token, key.key_hash) or key.accepts_previous(token, time.time())):
                return key
        return None

    async def admit(self, request: Any, info: RequestInfo, payload: dict[str, Any], route: Any) -> Ticket:
        key_id = info.key_id
        key: ApiKey | None = None
        policy: Policy | None = None
        bucket = ""
        if key_id is None:
            policy = self._ip_policy
            if policy is not None:
                bucket = ip_bucket(client_address(request.scope, self._trust_xff))
        elif key_id != ADMIN_KEY_ID:
            key = self.keys.get(key_id)
            if key is None:  # removed from keys.db by hand since authenticate
                raise errors.incorrect_key(f"tr-{key_id}-***")
            if not key.access.allows(info.model or ""):
                # As OpenAI does for a model the key cannot use: the same 404 as an unknown one, naming the ones it may use.
                catalogue = self._model_catalogue
                allowed = [m for m in catalogue() if key.access.allows(m)] if catalogue is not None else None
                raise model_not_found(info.model or "", allowed)
            policy = self.policy_for(key)
            if not policy.active:
                policy = None
            bucket = key_bucket(key.id)
        ceiling = self._output_ceiling
        if key is not None and key.max_output_tokens is not None and (not ceiling or key.max_output_tokens < ceiling):
            ceiling = key.max_output_tokens
        if ceiling:
            # Before anything estimates the request: limits, cost cap and budget count the ceiling (app/output_ceiling.py).
            apply_output_ceiling(payload, ceiling, ceiling_field(route.provider.kind))
        if self._global_policy is not None and key_id is not None:
            await self._admit_global(info)
        price = self.prices.for_route(route)
        tokens = worst_nano = 0
        budgeted = policy is not None and policy.budget_nano is not None
        if (policy is not None and policy.tpm) or ((self._cap_nano or budgeted) and not price.free):
            if policy is not None and prompt_chars(payload, _PEEK_ABOVE_CHARS) > _PEEK_ABOVE_CHARS:
                # A caller already over its request, parallel or budget limit is refused
                # before its large prompt is encoded (issue 10 item 3).
                await self._refuse_early(bucket, info, policy, key)
            # Off the event loop, bounded, and remembered for the rest of the request.
            prompt = await self.tokens.count_prompt(payload, route.upstream_model, info.request_id)
            tokens, worst_nano = self._estimate(payload, route, price, prompt)
        wanted = requested_max_tokens(payload)
        completion = (self._completion_estimate if wanted is None else wanted) * requested_choices(payload)
        ticket = Ticket(price, route.upstream_model, completion, payload.get("stream") is True, key.id if key is not None else None)
        if policy is not None:
            period_start, period_end = 0, float("inf")
            if policy.budget_nano is not None:
                period_start, period_end = self._periods.bounds(policy.budget_period, time.time())
            # The worst case is held against the budget until release, so requests
            # in flight cannot all start while the spend alone is under budget.
            await self._acquire(ticket, Ask(bucket, info.request_id, policy, tokens, period_start, period_end, worst_nano if budgeted else 0), key, info)
        return ticket

    async def release(self, info: RequestInfo) -> None:
        try:
            await self._release(info, info.ticket)
        except Exception:
            log.exception("could not account for request %s", info.request_id)

    async def check_step(self, info: RequestInfo, body: dict[str, Any], spent: dict[str, Any] | None) -> None:
        """Before each model call of an agent run: may the run afford it?

        ``body`` is the upstream request about to be sent, ``spent`` the usage of
        the run's model calls so far. The run so far plus this call's worst case
        (prompt + max tokens at the model's price) must fit the per-request cap
        (else 400 ``cost_cap_exceeded``) and what the key's budget has left after
        the spend and other requests' reservations (else 429
        ``insufficient_quota``); the request's reservation then becomes that sum.
        """
        ticket = info.ticket
        if not isinstance(ticket, Ticket) or ticket.price.free:
            return
        ask = ticket.ask
        budgeted = ask is not None and ticket.decision is not None and ask.policy.budget_nano is not None
        if not (self._cap_nano or budgeted):
            return
        price = ticket.price
        prompt = await self.tokens.count_messages_async(body.get("messages") or [], ticket.model, body.get("tools"))
        completion = (requested_max_tokens(body) or self._completion_estimate) * requested_choices(body)
        so_far = price.cost_nano(spent)
        upcoming = price.estimate_nano(prompt, completion)
        if self._cap_nano and so_far + upcoming > self._cap_nano:
            raise errors.run_cost_cap(spent_usd=so_far / NANO, next_usd=upcoming / NANO, cap_usd=self._cap_nano / NANO)
        if not budgeted or ask is None:
            return
        try:
            held = await self.backend.reserve(ask, so_far + upcoming)
        except Exception as exc:  # noqa: BLE001 - as at admission: 503 unless fail_open
            self._backend_failed(exc)
            if not self._fail_open:
                raise errors.limiter_unavailable() from None
            return
        if held is not None:
            policy = ask.policy
            raise errors.quota_exceeded(
                key_id=ticket.key_id or "?",
                budget_usd=(policy.budget_nano or 0) / NANO,
                period=policy.budget_period,
                held_and_needed=((held + so_far) / NANO, upcoming / NANO),
            )

    async def admit_unpriced(self, request: Any, info: RequestInfo, *, parallel: bool = True) -> Ticket:
        """Admit a request that calls no model (``/v1/memories``, issue 10 item 12).

        It counts against the caller's requests per minute and (unless ``parallel`` is false:
        reads of a key's own background responses, whose run holds a slot) parallel slots,
        costs nothing (so tokens per minute and the budget do not apply) and,
        like every admitted request, gets a ledger row at :meth:`release`.
        """
        policy: Policy | None = None
        key: ApiKey | None = None
        bucket = ""
        if info.key_id is None:
            policy = self._ip_policy
            if policy is not None:
                bucket = ip_bucket(client_address(request.scope, self._trust_xff))
                if not parallel:
                    policy = Policy(policy.rpm, 0, 0)
        elif info.key_id != ADMIN_KEY_ID:
            key = self.keys.get(info.key_id)
            if key is None:  # removed from keys.db by hand since authenticate
                raise errors.incorrect_key(f"tr-{info.key_id}-***")
            full = self.policy_for(key)
            policy = Policy(full.rpm, 0, full.max_parallel if parallel else 0)
            bucket = key_bucket(key.id)
        if self._global_policy is not None and info.key_id is not None:
            await self._admit_global(info)
        ticket = Ticket(_FREE_PRICE)
        if policy is not None and policy.active:
            await self._acquire(ticket, Ask(bucket, info.request_id, policy, 0), key, info)
        return ticket

    async def _admit_global(self, info: RequestInfo) -> None:
        """Count the request against ``[limits] global_rpm`` (every key together), or raise its 429.

        It comes before the key's own limits, so a flood is turned away before it
        touches any key's counters; a request refused later still counted here (it
        reached the server). Nothing to release: a request entry leaves the window by itself.
        """
        policy = self._global_policy
        assert policy is not None  # noqa: S101 - the callers check
        ask = Ask(GLOBAL_BUCKET, info.request_id, policy, 0)
        try:
            decision = await self.backend.acquire(ask)
        except Exception as exc:  # noqa: BLE001 - as for a key's limits: 503 unless fail-open
            self._backend_failed(exc)
            if not self._fail_open:
                raise errors.limiter_unavailable() from None
            return
        if not decision.ok:
            raise errors.rate_limited(
                "requests",
                subject="this server (all keys together)",
                model=None,
                limit=policy.rpm,
                used=decision.used,
                requested=1,
                retry_ms=decision.retry_ms,
                headers={},
            )

    async def _acquire(self, ticket: Ticket, ask: Ask, key: ApiKey | None, info: RequestInfo) -> None:
        """Take ``ask`` from the limit backend onto ``ticket``, or raise the refusal (503 on an outage unless fail-open)."""
        try:
            decision = await self.backend.acquire(ask)
        except Exception as exc:  # noqa: BLE001 - a backend outage must not become a 500
            self._backend_failed(exc)
            if not self._fail_open:
                raise errors.limiter_unavailable() from None
            return
        if not decision.ok:
            raise self._refusal(decision, ask, key, info)
        ticket.ask = ask
        ticket.decision = decision
        ticket.headers = rate_headers(ask.policy, decision)

    async def start(self) -> None:
        await self.backend.start()
        if self.ledger is not None:
            self.ledger.start()
            shared = self._shared_spend()
            if shared is None:
                await self._seed_budgets()
            else:
                await shared.seed()
                self._shared_task = asyncio.get_running_loop().create_task(shared.run(), name="toolrelay-shared-spend")

    def _shared_spend(self) -> SharedSpend | None:
        """Other hosts' spend read from the shared ledger: a PostgreSQL ledger and this process's own counters (no Redis)."""
        ledger, backend = self.ledger, self.backend
        if not (isinstance(backend, MemoryBackend) and hasattr(ledger, "spend_by_host")):
            return None
        keys = self.keys

        def budgeted() -> list[tuple[str, str]]:
            return [(k.id, k.budget_period) for k in keys.all() if k.budget_usd is not None and k.revoked_at is None]

        return SharedSpend(cast("SpendLedger", ledger), backend, budgeted)

    async def close(self) -> None:
        if self._shared_task is not None:
            self._shared_task.cancel()
        try:
            await self.backend.close()
        finally:
            if self.ledger is not None:
                await anyio.to_thread.run_sync(self.ledger.close)
            self.keys.close()

    # -- internals -------------------------------------------------------

    async def _refuse_early(self, bucket: str, info: RequestInfo, policy: Policy, key: ApiKey | None) -> None:
        peek = getattr(self.backend, "peek", None)
        if peek is None:
            return
        period_start, period_end = 0, float("inf")
        if policy.budget_nano is not None:
            period_start, period_end = self._periods.bounds(policy.budget_period, time.time())
        ask = Ask(bucket, info.request_id, policy, 0, period_start, period_end)
        try:
            decision = await peek(ask)
        except Exception:  # noqa: BLE001 - acquire (next) decides what a backend outage means
            return
        if not decision.ok:
            raise self._refusal(decision, ask, key, info)

    def _estimate(self, payload: dict[str, Any], route: Any, price: Price, prompt: int) -> tuple[int, int]:
        """(tokens, nano-dollars) of the worst case: ``prompt`` tokens plus the most
        the completion may use, times ``n`` choices; checks the cost cap on the way."""
        wanted = requested_max_tokens(payload)
        per_choice = wanted if wanted is not None else self._completion_estimate
        choices = requested_choices(payload)
        completion = per_choice * choices
        worst = price.estimate_nano(prompt, completion)
        if self._cap_nano and not price.free and worst > self._cap_nano:
            prompt_only = price.estimate_nano(prompt, 0)
            cap = self._cap_nano / NANO
            if prompt_only > self._cap_nano:
                raise errors.cost_cap(
                    estimate_usd=worst / NANO,
                    cap_usd=cap,
                    param="messages",
                    suggestion=f"The prompt alone (about {prompt} tokens) costs ${prompt_only / NANO:.4f}; shorten the messages.",
                )
            affordable = int((self._cap_nano - prompt_only) / (price.output * choices)) if price.output else per_choice
            field = "max_completion_tokens" if "max_completion_tokens" in payload else "max_tokens"
            hint = f"Set {field} to at most {affordable}" + (f" (for each of the n={choices} choices)." if choices > 1 else ".")
            if wanted is None:
                hint += f" Without it, {per_choice} completion tokens per choice are assumed."
            if choices > 1 and affordable < 1:
                field, hint = "n", f"{choices} choices cannot fit; lower n."
            raise errors.cost_cap(estimate_usd=worst / NANO, cap_usd=cap, param=field, suggestion=hint)
        return prompt + completion, worst

    def _refusal(self, decision: Decision, ask: Ask, key: ApiKey | None, info: RequestInfo) -> OpenAIError:
        policy = ask.policy
        subject = f"key tr-{key.id}" if key is not None else f"address {ask.bucket[3:]}"
        reason = decision.reason
        if reason == "budget":
            budget = policy.budget_nano or 0
            # used < budget: spend plus the reservations of requests in flight leave too little for this one.
            short = (decision.used / NANO, ask.cost_nano / NANO) if decision.used < budget else None
            return errors.quota_exceeded(key_id=key.id if key else "?", budget_usd=budget / NANO, period=policy.budget_period, held_and_needed=short)
        if reason == "parallel":
            return errors.too_many_parallel(subject=subject, limit=policy.max_parallel, retry_ms=decision.retry_ms)
        if reason == "requests":
            headers = {
                "x-ratelimit-limit-requests": str(policy.rpm),
                "x-ratelimit-remaining-requests": "0",
                "x-ratelimit-reset-requests": go_duration(decision.retry_ms),
            }
            return errors.rate_limited(
                "requests", subject=subject, model=info.model, limit=policy.rpm, used=decision.used, requested=1, retry_ms=decision.retry_ms, headers=headers
            )
        headers = {
            "x-ratelimit-limit-tokens": str(policy.tpm),
            "x-ratelimit-remaining-tokens": str(max(0, policy.tpm - decision.used)),
            "x-ratelimit-reset-tokens": go_duration(decision.retry_ms),
        }
        if reason == "too_large":
            return errors.too_large(subject=subject, limit=policy.tpm, requested=ask.tokens, headers=headers)
        return errors.rate_limited(
            "tokens", subject=subject, model=info.model, limit=policy.tpm, used=decision.used, requested=ask.tokens, retry_ms=decision.retry_ms, headers=headers
        )

    async def _release(self, info: RequestInfo, ticket: Any) -> None:
        if ticket is None and info.key_id is None and self.enabled:
            return  # refused at authentication: nothing to account, and no row an attacker could multiply
        usage = info.usage
        prompt = completion = cost = 0
        estimated = cache_hit = False
        if usage is not None:
            prompt, completion, estimated, cache_hit = usage.prompt_tokens, usage.completion_tokens, usage.estimated, usage.cache_hit
            # An answer replayed from the response cache asked no model: its tokens are booked, at no cost.
            if ticket is not None and not cache_hit:
                if not completion and not ticket.streamed and info.mode == "proxy" and info.error_code == "client_disconnected":
                    # The client left a non-streamed upstream call, which writes (and bills) its
                    # whole answer whether or not we wait for it: book the completion assumed at admission.
                    completion = ticket.completion
                    usage = RequestUsage(prompt, completion, usage.cached_tokens, estimated)
                cost = ticket.price.usage_nano(usage)
        if ticket is not None:
            ask = ticket.ask
            if ask is not None and ticket.decision is not None and _needs_settle(ask, prompt + completion, cost):
                try:
                    await self.backend.settle(ask, ticket.decision, prompt + completion, cost)
                except Exception as exc:  # noqa: BLE001 - slots expire on their own (slot_ttl_seconds)
                    self._backend_failed(exc)
        if self.ledger is not None:
            elapsed = time.perf_counter() - info.started
            self.ledger.record(
                info,
                ts=time.time() - elapsed,
                key_id=info.key_id,
                model=info.model,
                mode=info.mode,
                # A routed model's row names the deployment that answered ("upstream/deployment"): two deployments
                # can share one upstream (regions, keys, model names), and the row must say which one served.
                upstream=info.upstream if info.deployment is None else f"{info.upstream}/{info.deployment}",
                prompt_tokens=prompt,
                completion_tokens=completion,
                cost_nano=cost,
                latency_ms=elapsed * 1000,
                estimated=estimated,
                cache_hit=cache_hit,
            )

    async def _seed_budgets(self) -> None:
        """Start each budgeted key's spend from the ledger, so a restart does not reset budgets."""
        now = time.time()
        wanted = []
        for key in self.keys.all():
            if key.budget_usd is not None and key.revoked_at is None:
                start, end = self._periods.bounds(key.budget_period, now)
                wanted.append((key.id, start, end))
        if not wanted or self.ledger is None:
            return
        ledger = self.ledger
        spent = await anyio.to_thread.run_sync(lambda: [ledger.spent_nano(kid, start) for kid, start, _ in wanted])
        for (kid, start, end), nano in zip(wanted, spent, strict=True):
            try:
                await self.backend.seed_spend(kid, start, end, nano)
            except Exception as exc:  # noqa: BLE001
                self._backend_failed(exc)

    async def seed_budget(self, key: ApiKey) -> None:
        """Start a budget given to ``key`` while running from the ledger's spend this period (as at start)."""
        ledger = self.ledger
        if ledger is None or key.budget_usd is None:
            return
        start, end = self._periods.bounds(key.budget_period, time.time())
        nano = await anyio.to_thread.run_sync(lambda: ledger.spent_nano(key.id, start))
        try:
            await self.backend.seed_spend(key.id, start, end, nano)
        except Exception as exc:  # noqa: BLE001
            self._backend_failed(exc)

    async def spent_usd(self, key: ApiKey) -> float | None:
        if key.budget_usd is None:
            return None
        start, _ = self._periods.bounds(key.budget_period, time.time())
        try:
            return await self.backend.spent(key.id, start) / NANO
        except Exception as exc:  # noqa: BLE001
            self._backend_failed(exc)
            return None

    def _backend_failed(self, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._backend_error_logged > 10:
            self._backend_error_logged = now
            log.error("rate-limit backend error: %s: %s (%s)", type(exc).__name__, exc, "serving without limits" if self._fail_open else "refusing with 503")
