"""The OpenAI-shaped refusals of the gate and the admin API.

Messages name the key by its public id only; a presented credential appears
masked (:func:`app.auth.keyformat.mask`), never whole.
"""

from __future__ import annotations

import math

from toolrelay.app.auth.durations import go_duration
from toolrelay.app.errors import OpenAIError


def missing_key() -> OpenAIError:
    return OpenAIError(
        401,
        "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth "
        "(i.e. Authorization: Bearer YOUR_KEY). Keys are created with `toolrelay keys create`.",
        type="authentication_error",
        code="invalid_api_key",
    )


def incorrect_key(masked: str) -> OpenAIError:
    return OpenAIError(
        401, f"Incorrect API key provided: {masked}. Check the key, or ask the operator for a new one.", type="authentication_error", code="invalid_api_key"
    )


def expired_key(key_id: str) -> OpenAIError:
    return OpenAIError(401, f"The API key tr-{key_id} has expired. Ask the operator for a new one.", type="authentication_error", code="invalid_api_key")


def retry_headers(retry_ms: int) -> dict[str, str]:
    retry_ms = max(1, int(retry_ms))
    return {"retry-after": str(max(1, math.ceil(retry_ms / 1000))), "retry-after-ms": str(retry_ms)}


def rate_limited(what: str, *, subject: str, model: str | None, limit: int, used: int, requested: int, retry_ms: int, headers: dict[str, str]) -> OpenAIError:
    """429 for a per-minute limit, worded like OpenAI's (clients and people grep for these)."""
    unit = "requests per min (RPM)" if what == "requests" else "tokens per min (TPM)"
    on_model = f" (model {model})" if model else ""
    return OpenAIError(
        429,
        f"Rate limit reached for {subject}{on_model} on {unit}: Limit {limit}, Used {used}, Requested {requested}. "
        f"Please try again in {go_duration(retry_ms)}.",
        type="rate_limit_error",
        code="rate_limit_exceeded",
        headers={**headers, **retry_headers(retry_ms)},
    )


def too_large(*, subject: str, limit: int, requested: int, headers: dict[str, str]) -> OpenAIError:
    """A single request larger than the whole per-minute token allowance: waiting cannot help."""
    return OpenAIError(
        429,
        f"Request too large for {subject} on tokens per min (TPM): Limit {limit}, Requested {requested}. "
        "The input or output tokens must be reduced (lower max_tokens or shorten the messages) to run successfully.",
        type="rate_limit_error",
        code="rate_limit_exceeded",
        headers={**headers, "x-should-retry": "false"},
    )


def too_many_parallel(*, subject: str, limit: int, retry_ms: int) -> OpenAIError:
    return OpenAIError(
        429,
        f"Too many parallel requests for {subject}: the limit is {limit} at a time. Wait for one to finish.",
        type="rate_limit_error",
        code="rate_limit_exceeded",
        headers=retry_headers(retry_ms),
    )


def quota_exceeded(*, key_id: str, budget_usd: float, period: str, held_and_needed: tuple[float, float] | None = None) -> OpenAIError:
    """The budget is used up; or, with ``held_and_needed`` (USD spent plus reserved by requests
    in flight, USD this request or agent step could cost), what is left cannot cover this one."""
    span = "in total" if period == "total" else f"for this {_PERIOD_NOUN.get(period, period)}"
    if held_and_needed is None:
        state = f"has used its budget of ${budget_usd:.2f} {span}"
    else:
        held, needed = held_and_needed
        state = (
            f"has ${max(0.0, budget_usd - held):.4f} left of its budget of ${budget_usd:.2f} {span} "
            f"(counting requests still in flight), and this call could cost up to ${needed:.4f}"
        )
    return OpenAIError(
        429,
        f"You exceeded your current quota: key tr-{key_id} {state}. Ask the operator to raise the budget, or wait for the next period.",
        type="insufficient_quota",
        code="insufficient_quota",
        # The OpenAI SDKs honour this and do not retry; retrying cannot succeed.
        headers={"x-should-retry": "false"},
    )


_PERIOD_NOUN = {"daily": "day", "weekly": "week", "monthly": "month"}


def cost_cap(*, estimate_usd: float, cap_usd: float, param: str, suggestion: str) -> OpenAIError:
    return OpenAIError(
        400,
        f"This request could cost up to ${estimate_usd:.4f}, above the server's per-request limit of ${cap_usd:.4f}. {suggestion}",
        type="invalid_request_error",
        param=param,
        code="cost_cap_exceeded",
    )


def run_cost_cap(*, spent_usd: float, next_usd: float, cap_usd: float) -> OpenAIError:
    return OpenAIError(
        400,
        f"The agent run stopped: it has cost ${spent_usd:.4f} so far and its next model call could cost up to ${next_usd:.4f}, "
        f"above the server's per-request limit of ${cap_usd:.4f}. Lower max_tokens or agent_options.max_steps, or split the task.",
        type="invalid_request_error",
        param=None,
        code="cost_cap_exceeded",
    )


def limiter_unavailable() -> OpenAIError:
    return OpenAIError(
        503,
        "The rate limiter is temporarily unavailable. Please retry shortly.",
        type="service_unavailable",
        code="limiter_unavailable",
        headers=retry_headers(1000),
    )


def admin_disabled() -> OpenAIError:
    return OpenAIError(
        403, "The admin API is disabled: set auth.admin_key (or TOOLRELAY_ADMIN_KEY) to enable it.", type="permission_error", code="admin_api_disabled"
    )


def admin_required() -> OpenAIError:
    return OpenAIError(403, "This endpoint needs the admin key; API keys cannot manage keys.", type="permission_error", code="insufficient_permissions")


def key_not_found(key_id: str) -> OpenAIError:
    return OpenAIError(404, f"No API key with id '{key_id}'.", type="invalid_request_error", param="key_id", code="key_not_found")
