"""The Chat Completions and Responses wire shapes toolrelay reads and writes, declared once.

Field names, optionality and nullability follow the OpenAI API reference
(``POST /v1/chat/completions``, ``GET /v1/models``, the error object,
``/v1/responses``: the request, the response object, its items and stream
events, as far as toolrelay writes them), plus
toolrelay's documented extensions (docs/agent.md, docs/tools.md):
``reasoning_content``/``reasoning`` (step text chat UIs show), ``agent_steps``
and ``agent_steps_delta`` (structured step records), ``annotations``
(``url_citation``) and the request's ``agent_options``.

A field typed ``X | UnsetType = UNSET`` may be absent; ``X | None`` must be
present and may be ``null`` (``finish_reason``, ``logprobs``, ``content``).
Unknown fields are accepted when decoding: upstreams add their own, and they
pass through.

These Structs are the contract, not the hot path. :mod:`app.encoder` builds
the same shapes as dicts and bytes (a Struct per chunk costs CPU the proxy's
budget has no room for), and the unit tests decode its output with these
types (tests/proxy/test_protocol.py). The OpenAPI document at /docs is
generated from them (:mod:`app.routes.openapi_docs`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from msgspec import UNSET, Meta, Struct, UnsetType

__all__ = [
    "AgentOptions",
    "AgentStep",
    "AssistantMessage",
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatCompletionRequest",
    "Choice",
    "ChoiceLogprobs",
    "ChunkChoice",
    "CompletionTokensDetails",
    "ContentPartAddedEvent",
    "ContentPartDoneEvent",
    "CreateResponseRequest",
    "Delta",
    "ErrorDetail",
    "ErrorResponse",
    "FinishReason",
    "FunctionCall",
    "FunctionCallArgumentsDeltaEvent",
    "FunctionCallArgumentsDoneEvent",
    "FunctionCallDelta",
    "FunctionCallItem",
    "FunctionCallOutputItem",
    "FunctionTool",
    "InputItemParam",
    "Item",
    "MessageItem",
    "Model",
    "ModelList",
    "OutputItem",
    "OutputItemAddedEvent",
    "OutputItemDoneEvent",
    "OutputTextDeltaEvent",
    "OutputTextDoneEvent",
    "PromptTokensDetails",
    "ReasoningItem",
    "ReasoningTextDeltaEvent",
    "ReasoningTextDoneEvent",
    "ResponseCompletedEvent",
    "ResponseCreatedEvent",
    "ResponseDeleted",
    "ResponseErrorEvent",
    "ResponseFailedEvent",
    "ResponseInProgressEvent",
    "ResponseIncompleteEvent",
    "ResponseItemList",
    "ResponseMessage",
    "ResponseObject",
    "ResponseStreamEvent",
    "ResponseUsage",
    "ToolCall",
    "ToolCallDelta",
    "UrlCitation",
    "UrlCitationAnnotation",
    "Usage",
]

FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "function_call"]
Role = Literal["system", "developer", "user", "assistant", "tool", "function"]


# ---------------------------------------------------------------------------
# tool calls


class FunctionCall(Struct, kw_only=True):
    name: str
    # A JSON object as text, as the model wrote it (it may not be valid JSON).
    arguments: str


class ToolCall(Struct, kw_only=True):
    """A whole tool call (a message's ``tool_calls`` entry)."""

    id: str
    type: Literal["function"]
    function: FunctionCall


class FunctionCallDelta(Struct, kw_only=True, omit_defaults=True):
    name: str | UnsetType = UNSET
    arguments: str | UnsetType = UNSET


class ToolCallDelta(Struct, kw_only=True, omit_defaults=True):
    """A streamed piece of a tool call: ``index`` always; ``id``, ``type`` and
    ``function.name`` only in a call's first piece; argument text after that."""

    index: int
    id: str | UnsetType = UNSET
    type: Literal["function"] | UnsetType = UNSET
    function: FunctionCallDelta | UnsetType = UNSET


# ---------------------------------------------------------------------------
# extensions: citations and agent steps


class UrlCitation(Struct, kw_only=True):
    start_index: int
    end_index: int
    url: str
    title: str


class UrlCitationAnnotation(Struct, kw_only=True):
    type: Literal["url_citation"]
    url_citation: UrlCitation


class StepSource(Struct, kw_only=True):
    url: str
    title: str


class AgentStep(Struct, kw_only=True, omit_defaults=True):
    """One record of an agent run (docs/agent.md, "The agent_steps record")."""

    index: Annotated[
        int,
        Meta(
            ge=0,
            description="Position in the run, unique: the Python SDK merges list entries by index.",
        ),
    ]
    type: Annotated[str, Meta(description="tool_call, tool_result, limit or repeat.")]
    step: int | UnsetType = UNSET
    call_id: str | UnsetType = UNSET
    tool: str | UnsetType = UNSET
    arguments: Annotated[
        Any,
        Meta(description="The parsed JSON arguments, or the raw text if they were not JSON."),
    ] = UNSET
    status: Literal["ok", "error", "timeout", "invalid_arguments", "unknown_tool"] | UnsetType = UNSET
    summary: str | UnsetType = UNSET
    duration_ms: float | UnsetType = UNSET
    truncated: bool | UnsetType = UNSET
    sources: list[StepSource] | UnsetType = UNSET
    data: dict[str, Any] | UnsetType = UNSET
    limit: str | UnsetType = UNSET
    message: str | UnsetType = UNSET


# ---------------------------------------------------------------------------
# logprobs and usage


class TopLogprob(Struct, kw_only=True):
    token: str
    logprob: float
    bytes: list[int] | None


class TokenLogprob(Struct, kw_only=True):
    token: str
    logprob: float
    bytes: list[int] | None
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(Struct, kw_only=True):
    content: list[TokenLogprob] | None
    refusal: list[TokenLogprob] | UnsetType | None = UNSET


class PromptTokensDetails(Struct, kw_only=True, omit_defaults=True):
    cached_tokens: int | UnsetType = UNSET
    audio_tokens: int | UnsetType = UNSET


class CompletionTokensDetails(Struct, kw_only=True, omit_defaults=True):
    reasoning_tokens: int | UnsetType = UNSET
    audio_tokens: int | UnsetType = UNSET
    accepted_prediction_tokens: int | UnsetType = UNSET
    rejected_prediction_tokens: int | UnsetType = UNSET


class Usage(Struct, kw_only=True, omit_defaults=True):
    """Token usage; other fields an upstream reports pass through."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | UnsetType | None = UNSET
    completion_tokens_details: CompletionTokensDetails | UnsetType | None = UNSET


# ---------------------------------------------------------------------------
# chat.completion


class ResponseMessage(Struct, kw_only=True, omit_defaults=True):
    """``choices[].message`` of a ``chat.completion``."""

    role: Literal["assistant"]
    content: str | None
    refusal: str | None
    tool_calls: list[ToolCall] | UnsetType = UNSET
    annotations: list[UrlCitationAnnotation] | UnsetType = UNSET
    audio: dict[str, Any] | UnsetType | None = UNSET
    # Extensions: agent mode's step text and records (docs/agent.md).
    reasoning_content: str | UnsetType = UNSET
    reasoning: str | UnsetType = UNSET
    agent_steps: list[AgentStep] | UnsetType = UNSET


class Choice(Struct, kw_only=True):
    index: int
    message: ResponseMessage
    logprobs: ChoiceLogprobs | None
    finish_reason: FinishReason


class ChatCompletion(Struct, kw_only=True, omit_defaults=True):
    """The body of a non-streamed answer."""

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    system_fingerprint: str | UnsetType | None = UNSET
    service_tier: str | UnsetType | None = UNSET


# ---------------------------------------------------------------------------
# chat.completion.chunk


class Delta(Struct, kw_only=True, omit_defaults=True):
    """``choices[].delta`` of a chunk: ``role`` in a choice's first delta only."""

    role: Literal["assistant"] | UnsetType = UNSET
    content: str | UnsetType | None = UNSET
    refusal: str | UnsetType | None = UNSET
    tool_calls: list[ToolCallDelta] | UnsetType = UNSET
    annotations: list[UrlCitationAnnotation] | UnsetType = UNSET
    reasoning_content: str | UnsetType = UNSET
    reasoning: str | UnsetType = UNSET
    # The records new in this chunk (one each), live.
    agent_steps_delta: list[AgentStep] | UnsetType = UNSET
    # Every record once, on the finishing chunk: SDK accumulators that keep a
    # field's last value still end with all of them (docs/agent.md).
    agent_steps: list[AgentStep] | UnsetType = UNSET


class ChunkChoice(Struct, kw_only=True):
    index: int
    delta: Delta
    logprobs: ChoiceLogprobs | None
    finish_reason: FinishReason | None


class ChatCompletionChunk(Struct, kw_only=True, omit_defaults=True):
    """One ``data:`` line of a streamed answer (the stream ends with ``data: [DONE]``).

    ``usage`` is present only when the request set ``stream_options.include_usage``:
    ``null`` on every chunk, then a last chunk with ``choices: []`` and the usage.
    """

    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChunkChoice]
    system_fingerprint: str | UnsetType | None = UNSET
    service_tier: str | UnsetType | None = UNSET
    usage: Usage | UnsetType | None = UNSET


# ---------------------------------------------------------------------------
# models


class Model(Struct, kw_only=True):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(Struct, kw_only=True):
    object: Literal["list"]
    data: list[Model]


# ---------------------------------------------------------------------------
# errors


class ErrorDetail(Struct, kw_only=True):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(Struct, kw_only=True):
    """Every non-2xx body, and the one ``data:`` event that ends a failed stream."""

    error: ErrorDetail


# ---------------------------------------------------------------------------
# the request (documentation and tests; the handler parses raw JSON, see app.validation)


class TextPart(Struct, tag_field="type", tag="text", kw_only=True):
    text: str


class ImageUrl(Struct, kw_only=True, omit_defaults=True):
    url: str
    detail: Literal["auto", "low", "high"] | UnsetType = UNSET


class ImagePart(Struct, tag_field="type", tag="image_url", kw_only=True):
    image_url: ImageUrl


class InputAudio(Struct, kw_only=True):
    data: str
    format: Literal["wav", "mp3"]


class AudioPart(Struct, tag_field="type", tag="input_audio", kw_only=True):
    input_audio: InputAudio


class FileRef(Struct, kw_only=True, omit_defaults=True):
    file_data: str | UnsetType = UNSET
    file_id: str | UnsetType = UNSET
    filename: str | UnsetType = UNSET


class FilePart(Struct, tag_field="type", tag="file", kw_only=True):
    file: FileRef


class RefusalPart(Struct, tag_field="type", tag="refusal", kw_only=True):
    refusal: str


UserContentPart = TextPart | ImagePart | AudioPart | FilePart
AssistantContentPart = TextPart | RefusalPart


class SystemMessage(Struct, tag_field="role", tag="system", kw_only=True, omit_defaults=True):
    content: str | list[TextPart]
    name: str | UnsetType = UNSET


class DeveloperMessage(Struct, tag_field="role", tag="developer", kw_only=True, omit_defaults=True):
    content: str | list[TextPart]
    name: str | UnsetType = UNSET


class UserMessage(Struct, tag_field="role", tag="user", kw_only=True, omit_defaults=True):
    content: str | list[UserContentPart]
    name: str | UnsetType = UNSET


class AssistantMessage(Struct, tag_field="role", tag="assistant", kw_only=True, omit_defaults=True):
    """An earlier answer sent back as history; ``tool_calls`` as the response gave them."""

    content: str | list[AssistantContentPart] | UnsetType | None = UNSET
    refusal: str | UnsetType | None = UNSET
    name: str | UnsetType = UNSET
    tool_calls: list[ToolCall] | UnsetType = UNSET


class ToolMessage(Struct, tag_field="role", tag="tool", kw_only=True):
    content: str | list[TextPart]
    tool_call_id: str


class FunctionMessage(Struct, tag_field="role", tag="function", kw_only=True):
    """Deprecated by OpenAI in favour of ``tool``; still accepted."""

    content: str | None
    name: str


Message = SystemMessage | DeveloperMessage | UserMessage | AssistantMessage | ToolMessage | FunctionMessage


class FunctionDefinition(Struct, kw_only=True, omit_defaults=True):
    name: Annotated[str, Meta(pattern="^[a-zA-Z0-9_-]{1,64}$")]
    description: str | UnsetType = UNSET
    parameters: Annotated[dict[str, Any], Meta(description="A JSON Schema object.")] | UnsetType = UNSET
    strict: bool | UnsetType | None = UNSET


class Tool(Struct, kw_only=True):
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(Struct, kw_only=True):
    name: str


class NamedToolChoice(Struct, kw_only=True):
    type: Literal["function"]
    function: NamedFunction


class StreamOptions(Struct, kw_only=True, omit_defaults=True):
    include_usage: bool | UnsetType = UNSET


# Documented as > 0, checked by the agent runner rather than by msgspec: its error
# names the option (``param: "agent_options.max_steps"``), msgspec's would not.
_POSITIVE = Meta(extra_json_schema={"exclusiveMinimum": 0})


# Also what agent/runner.py validates a request's ``agent_options`` with (the
# docstring below is the OpenAPI description): an unknown option is refused, and
# an option absent or null means the same, the server's setting.
class AgentOptions(Struct, kw_only=True, omit_defaults=True, forbid_unknown_fields=True):
    """Agent mode only (docs/agent.md): limits here can only lower the server's."""

    builtin_tools: list[str] | UnsetType | None = UNSET
    tool_choice: Annotated[str, Meta(description='"auto", "required" or a built-in tool name: what the first step must do.')] | UnsetType | None = UNSET
    max_steps: Annotated[int, _POSITIVE] | UnsetType | None = UNSET
    max_wall_seconds: Annotated[float, _POSITIVE] | UnsetType | None = UNSET
    max_total_tokens: Annotated[int, _POSITIVE] | UnsetType | None = UNSET
    auto_recall: bool | UnsetType | None = UNSET


class ChatCompletionRequest(Struct, kw_only=True, omit_defaults=True):
    """``POST /v1/chat/completions``. Every parameter the OpenAI API accepts is
    accepted and forwarded unchanged; the ones below are checked here."""

    messages: Annotated[list[Message], Meta(min_length=1)]
    model: (
        Annotated[
            str,
            Meta(description="A served model id, an alias, or agent/<model>. Default: the server's default_model."),
        ]
        | UnsetType
    ) = UNSET
    stream: bool | UnsetType | None = UNSET
    stream_options: StreamOptions | UnsetType | None = UNSET
    temperature: Annotated[float, Meta(ge=0, le=2)] | UnsetType | None = UNSET
    top_p: Annotated[float, Meta(ge=0, le=1)] | UnsetType | None = UNSET
    n: Annotated[int, Meta(ge=1, le=128)] | UnsetType | None = UNSET
    max_tokens: Annotated[int, Meta(ge=1)] | UnsetType | None = UNSET
    max_completion_tokens: Annotated[int, Meta(ge=1)] | UnsetType | None = UNSET
    stop: str | Annotated[list[str], Meta(max_length=4)] | UnsetType | None = UNSET
    presence_penalty: Annotated[float, Meta(ge=-2, le=2)] | UnsetType | None = UNSET
    frequency_penalty: Annotated[float, Meta(ge=-2, le=2)] | UnsetType | None = UNSET
    logit_bias: dict[str, int] | UnsetType | None = UNSET
    logprobs: bool | UnsetType | None = UNSET
    top_logprobs: Annotated[int, Meta(ge=0, le=20)] | UnsetType | None = UNSET
    seed: int | UnsetType | None = UNSET
    user: (
        Annotated[
            str,
            Meta(description="End-user id; in agent mode also selects the memory scope within the API key."),
        ]
        | UnsetType
    ) = UNSET
    response_format: dict[str, Any] | UnsetType = UNSET
    tools: Annotated[list[Tool], Meta(max_length=128)] | UnsetType = UNSET
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | UnsetType = UNSET
    parallel_tool_calls: bool | UnsetType = UNSET
    agent_options: AgentOptions | UnsetType = UNSET


# ---------------------------------------------------------------------------
# the Responses API (POST /v1/responses and the stored-response routes)
#
# The translation (app/responses/) builds these as dicts, like the encoder does
# for chat; tests/responses/test_responses_protocol.py converts what it builds
# to these types, so the two cannot drift, and tests/responses/schema.py checks
# the same output against OpenAI's published schema.


class OutputText(Struct, tag_field="type", tag="output_text", kw_only=True, omit_defaults=True):
    text: str
    annotations: list[dict[str, Any]]
    logprobs: list[dict[str, Any]] | UnsetType = UNSET


class OutputRefusal(Struct, tag_field="type", tag="refusal", kw_only=True):
    refusal: str


class InputText(Struct, tag_field="type", tag="input_text", kw_only=True):
    text: str


class InputImage(Struct, tag_field="type", tag="input_image", kw_only=True, omit_defaults=True):
    image_url: str | UnsetType | None = UNSET
    file_id: str | UnsetType | None = UNSET
    detail: Literal["auto", "low", "high"] | UnsetType = UNSET


class ReasoningText(Struct, tag_field="type", tag="reasoning_text", kw_only=True):
    text: str


class SummaryText(Struct, tag_field="type", tag="summary_text", kw_only=True):
    text: str


ItemStatus = Literal["in_progress", "completed", "incomplete"]
MessageContent = OutputText | OutputRefusal | InputText | InputImage


class MessageItem(Struct, tag_field="type", tag="message", kw_only=True, omit_defaults=True):
    """A message: the model's (``role: assistant``, ``output_text``/``refusal`` parts) or an input one."""

    id: str
    role: Literal["assistant", "user", "system", "developer"]
    content: list[MessageContent]
    status: ItemStatus | UnsetType = UNSET


class FunctionCallItem(Struct, tag_field="type", tag="function_call", kw_only=True, omit_defaults=True):
    id: str | UnsetType = UNSET
    call_id: Annotated[str, Meta(description="The id the client answers with in function_call_output.")]
    name: str
    arguments: Annotated[str, Meta(description="A JSON object as text, as the model wrote it.")]
    status: ItemStatus | UnsetType = UNSET


class FunctionCallOutputItem(Struct, tag_field="type", tag="function_call_output", kw_only=True, omit_defaults=True):
    id: str | UnsetType = UNSET
    call_id: str
    output: str | list[dict[str, Any]]
    status: ItemStatus | UnsetType = UNSET


class ReasoningItem(Struct, tag_field="type", tag="reasoning", kw_only=True, omit_defaults=True):
    """Chat upstreams' ``reasoning_content`` as ``content``; a summary only if one was made."""

    id: str
    summary: list[SummaryText]
    content: list[ReasoningText] | UnsetType = UNSET
    encrypted_content: str | UnsetType | None = UNSET
    status: ItemStatus | UnsetType = UNSET


OutputItem = MessageItem | FunctionCallItem | ReasoningItem
Item = MessageItem | FunctionCallItem | FunctionCallOutputItem | ReasoningItem


class InputItemParam(Struct, kw_only=True, omit_defaults=True):
    """One ``input`` entry. ``type`` may be left out for a message (``role`` and ``content``), as OpenAI allows;
    toolrelay takes ``message``, ``function_call``, ``function_call_output`` and ``reasoning`` items."""

    type: Literal["message", "function_call", "function_call_output", "reasoning"] | UnsetType = UNSET
    id: str | UnsetType | None = UNSET
    role: Literal["user", "assistant", "system", "developer"] | UnsetType = UNSET
    content: str | list[dict[str, Any]] | UnsetType | None = UNSET
    call_id: str | UnsetType = UNSET
    name: str | UnsetType = UNSET
    arguments: str | UnsetType = UNSET
    output: str | list[dict[str, Any]] | UnsetType = UNSET
    summary: list[dict[str, Any]] | UnsetType = UNSET
    status: ItemStatus | UnsetType = UNSET


class FunctionTool(Struct, tag_field="type", tag="function", kw_only=True, omit_defaults=True):
    """A client function tool (Responses spelling: no nested ``function`` object)."""

    name: str
    description: str | UnsetType | None = UNSET
    parameters: Annotated[dict[str, Any], Meta(description="A JSON Schema object.")] | UnsetType | None = UNSET
    strict: bool | UnsetType | None = UNSET


class NamedFunctionChoice(Struct, tag_field="type", tag="function", kw_only=True):
    name: str


class TextFormatText(Struct, tag_field="type", tag="text", kw_only=True):
    pass


class TextFormatJSONObject(Struct, tag_field="type", tag="json_object", kw_only=True):
    pass


class TextFormatJSONSchema(Struct, tag_field="type", tag="json_schema", kw_only=True, omit_defaults=True):
    name: str
    schema: Annotated[dict[str, Any], Meta(description="A JSON Schema object.")]
    strict: bool | UnsetType | None = UNSET
    description: str | UnsetType = UNSET


class TextConfig(Struct, kw_only=True, omit_defaults=True):
    format: TextFormatText | TextFormatJSONObject | TextFormatJSONSchema | UnsetType = UNSET
    verbosity: Literal["low", "medium", "high"] | UnsetType | None = UNSET


class ReasoningConfig(Struct, kw_only=True, omit_defaults=True):
    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | UnsetType | None = UNSET
    summary: Literal["auto", "concise", "detailed"] | UnsetType | None = UNSET


class CreateResponseRequest(Struct, kw_only=True, omit_defaults=True):
    """``POST /v1/responses``. Unknown fields are accepted and ignored, as OpenAI does (docs/responses.md)."""

    input: Annotated[str | list[InputItemParam], Meta(description="A user message as text, or a list of input items.")]
    model: Annotated[str, Meta(description="A served model id or alias. Default: the server's default_model.")] | UnsetType = UNSET
    instructions: str | UnsetType | None = UNSET
    previous_response_id: str | UnsetType | None = UNSET
    stream: bool | UnsetType | None = UNSET
    store: bool | UnsetType | None = UNSET
    background: bool | UnsetType | None = UNSET
    tools: list[FunctionTool] | UnsetType | None = UNSET
    tool_choice: Literal["none", "auto", "required"] | NamedFunctionChoice | UnsetType | None = UNSET
    parallel_tool_calls: bool | UnsetType | None = UNSET
    max_output_tokens: Annotated[int, Meta(ge=1)] | UnsetType | None = UNSET
    temperature: Annotated[float, Meta(ge=0, le=2)] | UnsetType | None = UNSET
    top_p: Annotated[float, Meta(ge=0, le=1)] | UnsetType | None = UNSET
    text: TextConfig | UnsetType | None = UNSET
    reasoning: ReasoningConfig | UnsetType | None = UNSET
    metadata: Annotated[dict[str, str], Meta(max_length=16)] | UnsetType | None = UNSET
    include: list[str] | UnsetType | None = UNSET
    truncation: Literal["auto", "disabled"] | UnsetType | None = UNSET
    user: str | UnsetType | None = UNSET
    safety_identifier: str | UnsetType | None = UNSET


class InputTokensDetails(Struct, kw_only=True, omit_defaults=True):
    cached_tokens: int
    cache_write_tokens: int | UnsetType = UNSET


class OutputTokensDetails(Struct, kw_only=True):
    reasoning_tokens: int


class ResponseUsage(Struct, kw_only=True):
    input_tokens: int
    input_tokens_details: InputTokensDetails
    output_tokens: int
    output_tokens_details: OutputTokensDetails
    total_tokens: int


class ResponseError(Struct, kw_only=True):
    """Why a response failed (``status: failed``)."""

    code: str
    message: str


class IncompleteDetails(Struct, kw_only=True):
    reason: Literal["max_output_tokens", "content_filter"]


class ResponseObject(Struct, kw_only=True, omit_defaults=True):
    """The ``response`` object: the answer, and the echo of the request's settings."""

    id: str
    object: Literal["response"]
    created_at: int
    status: Literal["completed", "failed", "in_progress", "cancelled", "queued", "incomplete"]
    completed_at: int | None
    error: ResponseError | None
    incomplete_details: IncompleteDetails | None
    instructions: str | None
    max_output_tokens: int | None
    model: str
    output: list[OutputItem]
    parallel_tool_calls: bool
    previous_response_id: str | None
    reasoning: ReasoningConfig | None
    store: bool
    temperature: float | None
    text: TextConfig
    tool_choice: Literal["none", "auto", "required"] | NamedFunctionChoice
    tools: list[FunctionTool]
    top_p: float | None
    truncation: Literal["auto", "disabled"] | None
    usage: ResponseUsage | None
    user: str | None
    safety_identifier: str | None
    metadata: dict[str, str]
    background: bool | None


class ResponseItemList(Struct, kw_only=True):
    """``GET /v1/responses/{id}/input_items``: one page."""

    object: Literal["list"]
    data: list[Item]
    #: ``""`` on an empty page (declared non-null strings, as the API reference has them).
    first_id: str
    last_id: str
    has_more: bool


class ResponseDeleted(Struct, kw_only=True):
    id: str
    object: Literal["response"]
    deleted: Literal[True]


# The stream: ``event: <type>`` and ``data: <one of these>``, sequence numbers 0, 1, 2...


class ResponseCreatedEvent(Struct, tag_field="type", tag="response.created", kw_only=True):
    response: ResponseObject
    sequence_number: int


class ResponseInProgressEvent(Struct, tag_field="type", tag="response.in_progress", kw_only=True):
    response: ResponseObject
    sequence_number: int


class ResponseCompletedEvent(Struct, tag_field="type", tag="response.completed", kw_only=True):
    response: ResponseObject
    sequence_number: int


class ResponseIncompleteEvent(Struct, tag_field="type", tag="response.incomplete", kw_only=True):
    response: ResponseObject
    sequence_number: int


class ResponseFailedEvent(Struct, tag_field="type", tag="response.failed", kw_only=True):
    response: ResponseObject
    sequence_number: int


class OutputItemAddedEvent(Struct, tag_field="type", tag="response.output_item.added", kw_only=True):
    output_index: int
    item: OutputItem
    sequence_number: int


class OutputItemDoneEvent(Struct, tag_field="type", tag="response.output_item.done", kw_only=True):
    output_index: int
    item: OutputItem
    sequence_number: int


class ContentPartAddedEvent(Struct, tag_field="type", tag="response.content_part.added", kw_only=True):
    item_id: str
    output_index: int
    content_index: int
    part: OutputText | OutputRefusal | ReasoningText
    sequence_number: int


class ContentPartDoneEvent(Struct, tag_field="type", tag="response.content_part.done", kw_only=True):
    item_id: str
    output_index: int
    content_index: int
    part: OutputText | OutputRefusal | ReasoningText
    sequence_number: int


class OutputTextDeltaEvent(Struct, tag_field="type", tag="response.output_text.delta", kw_only=True):
    item_id: str
    output_index: int
    content_index: int
    delta: str
    logprobs: list[dict[str, Any]]
    sequence_number: int


class OutputTextDoneEvent(Struct, tag_field="type", tag="response.output_text.done", kw_only=True):
    item_id: str
    output_index: int
    content_index: int
    text: str
    logprobs: list[dict[str, Any]]
    sequence_number: int


class ReasoningTextDeltaEvent(Struct, tag_field="type", tag="response.reasoning_text.delta", kw_only=True):
    item_id: str
    output_index: int
    content_index: int
    delta: str
    sequence_number: int


class ReasoningTextDoneEvent(Struct, tag_field="type", tag="response.reasoning_text.done", kw_only=True):
    item_id: str
    output_index: int
    content_index: int
    text: str
    sequence_number: int


class FunctionCallArgumentsDeltaEvent(Struct, tag_field="type", tag="response.function_call_arguments.delta", kw_only=True):
    item_id: str
    output_index: int
    delta: str
    sequence_number: int


class FunctionCallArgumentsDoneEvent(Struct, tag_field="type", tag="response.function_call_arguments.done", kw_only=True):
    item_id: str
    name: str
    output_index: int
    arguments: str
    sequence_number: int


class ResponseErrorEvent(Struct, tag_field="type", tag="error", kw_only=True):
    code: str | None
    message: str
    param: str | None
    sequence_number: int


ResponseStreamEvent = (
    ResponseCreatedEvent
    | ResponseInProgressEvent
    | ResponseCompletedEvent
    | ResponseIncompleteEvent
    | ResponseFailedEvent
    | OutputItemAddedEvent
    | OutputItemDoneEvent
    | ContentPartAddedEvent
    | ContentPartDoneEvent
    | OutputTextDeltaEvent
    | OutputTextDoneEvent
    | ReasoningTextDeltaEvent
    | ReasoningTextDoneEvent
    | FunctionCallArgumentsDeltaEvent
    | FunctionCallArgumentsDoneEvent
    | ResponseErrorEvent
)
