"""What the passed-through endpoints (``/v1/embeddings``, legacy ``/v1/completions``) share.

Their requests go through the same gate as chat, in the same order:
authenticate before the body is read, strict JSON, validation, the model
id routed (agent models refused: they exist only for chat), then
:meth:`app.gate.Gate.admit` with a chat-shaped view of the request, so the
allow-lists, rate and token limits, parallel slots, the budget and the cost
cap read it exactly as they read chat. The request is metered: the outer
ASGI layer releases it (ledger row, counters) however it ends.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from litestar import Request

from toolrelay.app.errors import OpenAIError
from toolrelay.app.gate import Ticket
from toolrelay.app.jsonbody import parse_json_body
from toolrelay.app.middleware import RequestInfo
from toolrelay.app.model_ids import split_agent_model
from toolrelay.app.output_ceiling import output_limit
from toolrelay.app.providers.base import ForwardCall
from toolrelay.app.providers.openai_parser import malformed_response
from toolrelay.app.providers.router import Route
from toolrelay.app.usage import RequestUsage
from toolrelay.app.validation import PromptInput

if TYPE_CHECKING:
    from toolrelay.app.services import Services

__all__ = ["Forwarded", "admit_forwarded", "estimated_usage", "not_for_agent_models", "plain_reply", "reply_stream", "usage_object"]


def not_for_agent_models(model: str, endpoint: str) -> OpenAIError:
    """OpenAI's answer to a chat-only model on a legacy endpoint: 404 naming the endpoint to use."""
    return OpenAIError(
        404,
        f"`{model}` is an agent model and not supported in the {endpoint} endpoint: agent models run on /v1/chat/completions and /v1/responses. "
        f"Use the plain model id `{split_agent_model(model)[1]}` here.",
        type="invalid_request_error",
        param="model",
        code="model_not_supported",
    )


@dataclass(slots=True)
class Forwarded:
    """An admitted request: its body, what it asks the model to read, where it goes."""

    payload: dict[str, Any]
    prompt: PromptInput
    route: Route
    ticket: Ticket
    # The request as the gate priced it (one user message holding the texts).
    priced: dict[str, Any]

    @property
    def model(self) -> str:
        """The id the client asked for (answers carry it, not the upstream's name)."""
        return self.payload["model"]

    def upstream_body(self, *, stream: bool = False) -> dict[str, Any]:
        body = dict(self.payload)
        body["model"] = self.route.upstream_model
        if stream:
            # Every request is metered, so usage is always asked for; it is stripped again when the client did not ask.
            options = body.get("stream_options")
            body["stream_options"] = {**options, "include_usage": True} if isinstance(options, dict) else {"include_usage": True}
        return body


def priced_view(prompt: PromptInput, payload: dict[str, Any], *, generates: bool) -> dict[str, Any]:
    """The request as the gate reads a chat request: the texts as one user message's parts
    (counted by the gate, off the loop when large, after a cheap refusal), the completion
    it may write (none for embeddings), ``n``/``best_of`` choices, ``stream``."""
    view: dict[str, Any] = {"messages": [{"role": "user", "content": [{"type": "text", "text": text} for text in prompt.texts]}]}
    if not generates:
        view["max_tokens"] = 0
        return view
    if payload.get("max_tokens") is not None:
        view["max_tokens"] = payload["max_tokens"]
    # best_of: the upstream writes (and bills) that many completions and returns n of them.
    view["n"] = max(payload.get("n") or 1, payload.get("best_of") or 1)
    view["stream"] = payload.get("stream") is True
    return view


async def admit_forwarded(
    services: Services,
    request: Request[Any, Any, Any],
    info: RequestInfo,
    *,
    mode: str,
    endpoint: str,
    validate: Callable[[Any], PromptInput],
) -> Forwarded:
    """Authenticate, parse, validate, route and admit; raises :class:`OpenAIError` with the status to send."""
    # Booked and released by the outer ASGI layer (app/middleware.py), however it ends.
    info.metered = True
    info.mode = mode
    await services.gate.authenticate(request, info)
    # Litestar enforces server.max_body_bytes while reading (413, app/server.py).
    payload = parse_json_body(await request.body())
    prompt = validate(payload)
    model: str = payload["model"]
    info.model = model
    if split_agent_model(model)[0]:
        raise not_for_agent_models(model, endpoint)
    route = services.router.resolve(model)
    if route is None:
        raise services.model_not_found(info, model)
    info.upstream = route.provider.name
    priced = priced_view(prompt, payload, generates=mode != "embeddings")
    if prompt.token_ids:
        # Token ids are counted by their number, not encoded: tell the counter so admission reads it.
        services.tokens.remember_prompt(info.request_id, route.upstream_model, prompt.token_ids)
    ticket = info.ticket = await services.gate.admit(request, info, priced, route)
    if mode != "embeddings":
        # The gate applied the output ceiling ([limits] max_output_tokens) to its view: the upstream gets it too.
        limit = output_limit(priced)
        if limit is not None and payload.get("max_tokens") != limit:
            payload["max_tokens"] = limit
    return Forwarded(payload, prompt, route, ticket, priced)


async def estimated_usage(services: Services, forwarded: Forwarded, request_id: str, generated: str = "") -> RequestUsage:
    """Usage counted by us when the upstream reported none: the prompt (counted once per request)
    and the generated text."""
    tokens = services.tokens
    model = forwarded.route.upstream_model
    prompt = forwarded.prompt.token_ids or await tokens.count_prompt(forwarded.priced, model, request_id)
    completion = await tokens.count_text_async(generated, model) if generated else 0
    return RequestUsage(prompt, completion, 0, True)


def usage_object(usage: RequestUsage, *, generates: bool) -> dict[str, int]:
    """``usage`` in OpenAI's shape: embeddings report no completion tokens."""
    if not generates:
        return {"prompt_tokens": usage.prompt_tokens, "total_tokens": usage.total_tokens}
    return {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens, "total_tokens": usage.total_tokens}


def reply_stream(route: Route, call: ForwardCall) -> AsyncGenerator[bytes, None]:
    """The provider's reply to ``call``; providers' forward() are async generators (the protocol says AsyncIterator)."""
    return cast("AsyncGenerator[bytes, None]", route.provider.forward(call))


async def plain_reply(route: Route, call: ForwardCall) -> bytes:
    """The whole body of a non-streamed call (the provider yields it once)."""
    answer = reply_stream(route, call)
    try:
        async for raw in answer:
            return raw
        raise malformed_response(route.provider.name)
    finally:
        await answer.aclose()
