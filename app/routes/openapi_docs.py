"""OpenAPI descriptions for handlers that read their body by hand.

The chat handler parses raw bytes (the hot path cannot afford a model per
request), so Litestar cannot infer its body; these operation classes describe
it for the /docs page.
"""

from __future__ import annotations

from dataclasses import dataclass
from litestar.openapi.spec import OpenAPIMediaType, Operation, RequestBody, Schema
from litestar.openapi.spec.enums import OpenAPIType

_MESSAGE = Schema(
    type=OpenAPIType.OBJECT,
    required=["role"],
    properties={
        "role": Schema(type=OpenAPIType.STRING, enum=["system", "developer", "user", "assistant", "tool", "function"]),
        "content": Schema(one_of=[Schema(type=OpenAPIType.STRING), Schema(type=OpenAPIType.ARRAY, items=Schema(type=OpenAPIType.OBJECT))]),
        "name": Schema(type=OpenAPIType.STRING),
        "tool_calls": Schema(type=OpenAPIType.ARRAY, items=Schema(type=OpenAPIType.OBJECT)),
        "tool_call_id": Schema(type=OpenAPIType.STRING),
    },
)

_CHAT_REQUEST = Schema(
    type=OpenAPIType.OBJECT,
    required=["messages"],
    description=(
        "OpenAI Chat Completions request. Every parameter the OpenAI API accepts is accepted and forwarded unchanged; "
        "the ones below are checked here."
    ),
    properties={
        "model": Schema(type=OpenAPIType.STRING, description="A served model id, an alias, or agent/<model>. Default: the server's default_model."),
        "messages": Schema(type=OpenAPIType.ARRAY, items=_MESSAGE, min_items=1),
        "stream": Schema(type=OpenAPIType.BOOLEAN),
        "stream_options": Schema(type=OpenAPIType.OBJECT, properties={"include_usage": Schema(type=OpenAPIType.BOOLEAN)}),
        "temperature": Schema(type=OpenAPIType.NUMBER, minimum=0, maximum=2),
        "top_p": Schema(type=OpenAPIType.NUMBER, minimum=0, maximum=1),
        "n": Schema(type=OpenAPIType.INTEGER, minimum=1, maximum=128),
        "max_tokens": Schema(type=OpenAPIType.INTEGER, minimum=1),
        "max_completion_tokens": Schema(type=OpenAPIType.INTEGER, minimum=1),
        "stop": Schema(one_of=[Schema(type=OpenAPIType.STRING), Schema(type=OpenAPIType.ARRAY, items=Schema(type=OpenAPIType.STRING), max_items=4)]),
        "presence_penalty": Schema(type=OpenAPIType.NUMBER, minimum=-2, maximum=2),
        "frequency_penalty": Schema(type=OpenAPIType.NUMBER, minimum=-2, maximum=2),
        "logit_bias": Schema(type=OpenAPIType.OBJECT),
        "logprobs": Schema(type=OpenAPIType.BOOLEAN),
        "top_logprobs": Schema(type=OpenAPIType.INTEGER, minimum=0, maximum=20),
        "seed": Schema(type=OpenAPIType.INTEGER),
        "user": Schema(type=OpenAPIType.STRING, description="End-user id; in agent mode also selects the memory scope within the API key."),
        "response_format": Schema(type=OpenAPIType.OBJECT),
        "tools": Schema(type=OpenAPIType.ARRAY, items=Schema(type=OpenAPIType.OBJECT), max_items=128),
        "tool_choice": Schema(one_of=[Schema(type=OpenAPIType.STRING, enum=["none", "auto", "required"]), Schema(type=OpenAPIType.OBJECT)]),
        "parallel_tool_calls": Schema(type=OpenAPIType.BOOLEAN),
        "agent_options": Schema(
            type=OpenAPIType.OBJECT,
            description="Agent mode only (docs/agent.md): builtin_tools, tool_choice, max_steps, max_wall_seconds, max_total_tokens, auto_recall.",
        ),
    },
)


@dataclass
class ChatCompletionOperation(Operation):
    def __post_init__(self) -> None:
        self.request_body = RequestBody(content={"application/json": OpenAPIMediaType(schema=_CHAT_REQUEST)}, required=True)
