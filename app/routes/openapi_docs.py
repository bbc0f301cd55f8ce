"""The OpenAPI description of the OpenAI-shaped routes, generated from :mod:`app.protocol`.

The chat and model handlers read and write raw bytes (the hot path cannot
afford a model per request), so Litestar cannot infer their bodies from
annotations. Instead msgspec generates JSON Schemas for the protocol Structs
(``msgspec.json.schema_components``), the operation classes below point at
them, and :func:`attach_protocol_schemas` adds them to the document's
``components/schemas``. They are added to the built document rather than to
``OpenAPIConfig.components`` because Litestar replaces ``components/schemas``
with its own registry when it builds the document.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, get_args

import msgspec
from litestar.openapi.spec import (
    OpenAPIMediaType,
    OpenAPIResponse,
    Operation,
    Reference,
    RequestBody,
    Schema,
)

from toolrelay.app.protocol import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    CreateResponseRequest,
    ErrorResponse,
    Model,
    ModelList,
    ResponseDeleted,
    ResponseItemList,
    ResponseObject,
    ResponseStreamEvent,
)

if TYPE_CHECKING:
    from litestar import Litestar

__all__ = [
    "ChatCompletionOperation",
    "ModelListOperation",
    "ModelOperation",
    "ResponseCreateOperation",
    "ResponseDeleteOperation",
    "ResponseInputItemsOperation",
    "ResponseRetrieveOperation",
    "attach_protocol_schemas",
    "protocol_schemas",
]

_REF = "#/components/schemas/{name}"
_DOCUMENTED = (
    ChatCompletionRequest,
    ChatCompletion,
    ChatCompletionChunk,
    ErrorResponse,
    Model,
    ModelList,
    CreateResponseRequest,
    ResponseObject,
    ResponseStreamEvent,
    ResponseItemList,
    ResponseDeleted,
)

# What each status means on these routes (docs/operations.md lists the codes).
_ERRORS = {
    "400": "Invalid request (`param` names the field).",
    "401": "Missing or wrong API key.",
    "403": "The key may not use this model, or a refused Host/Origin.",
    "404": "Unknown model.",
    "413": "Request body too large.",
    "415": "The body is not JSON.",
    "429": "Rate limit, budget or concurrency limit reached; see `retry-after`.",
    "500": "Server error.",
    "502": "The upstream failed or rejected toolrelay's credentials.",
    "503": "The upstream is overloaded or unavailable.",
    "504": "The upstream did not answer in time.",
}


@cache
def protocol_schemas() -> dict[str, dict[str, Any]]:
    """JSON Schemas of the documented protocol Structs and everything they contain, by name."""
    _, components = msgspec.json.schema_components(_DOCUMENTED, ref_template=_REF)
    return components


def attach_protocol_schemas(app: Litestar) -> None:
    """Add the protocol schemas to the app's OpenAPI document (built here, once, then cached by Litestar)."""
    components = app.openapi_schema.components
    schemas: dict[str, Any] = components.schemas if components.schemas is not None else {}
    for name, schema in protocol_schemas().items():
        if name in schemas:
            raise RuntimeError(f"OpenAPI schema name {name!r} is declared twice (app.protocol and a route's own types)")
        schemas[name] = schema
    components.schemas = schemas


def _ref(cls: Any) -> Reference:
    return Reference(ref=_REF.format(name=cls.__name__))


def _json(cls: type, description: str) -> OpenAPIResponse:
    return OpenAPIResponse(
        description=description,
        content={"application/json": OpenAPIMediaType(schema=_ref(cls))},
    )


def _errors(*statuses: str) -> dict[str, OpenAPIResponse | Reference]:
    return {status: _json(ErrorResponse, _ERRORS[status]) for status in statuses}


@dataclass
class ChatCompletionOperation(Operation):
    def __post_init__(self) -> None:
        self.request_body = RequestBody(
            content={"application/json": OpenAPIMediaType(schema=_ref(ChatCompletionRequest))},
            required=True,
        )
        self.responses = {
            "200": OpenAPIResponse(
                description=(
                    "A `chat.completion` object; with `stream: true`, server-sent events: one `chat.completion.chunk` "
                    "per `data:` line, then `data: [DONE]`. An error after the stream started is one `data:` line "
                    "holding an error object, without `[DONE]`."
                ),
                content={
                    "application/json": OpenAPIMediaType(schema=_ref(ChatCompletion)),
                    "text/event-stream": OpenAPIMediaType(schema=_ref(ChatCompletionChunk)),
                },
            ),
            **_errors(
                "400",
                "401",
                "403",
                "404",
                "413",
                "415",
                "429",
                "500",
                "502",
                "503",
                "504",
            ),
        }


@dataclass
class ModelListOperation(Operation):
    def __post_init__(self) -> None:
        self.responses = {
            "200": _json(ModelList, "The models this key may use."),
            **_errors("401", "429"),
        }


@dataclass
class ModelOperation(Operation):
    def __post_init__(self) -> None:
        self.responses = {
            "200": _json(Model, "One model."),
            **_errors("401", "404", "429"),
        }


# ResponseStreamEvent is a union (a type alias): msgspec gives each member a component, not the union.
_STREAM_EVENTS = get_args(ResponseStreamEvent)


@dataclass
class ResponseCreateOperation(Operation):
    def __post_init__(self) -> None:
        self.request_body = RequestBody(
            content={"application/json": OpenAPIMediaType(schema=_ref(CreateResponseRequest))},
            required=True,
        )
        self.responses = {
            "200": OpenAPIResponse(
                description=(
                    "A `response` object; with `stream: true`, server-sent events, each an `event: <type>` line and a "
                    "`data:` line holding that event, `sequence_number` 0, 1, 2...; the last is `response.completed`, "
                    "`response.incomplete` or `response.failed`."
                ),
                content={
                    "application/json": OpenAPIMediaType(schema=_ref(ResponseObject)),
                    "text/event-stream": OpenAPIMediaType(schema=Schema(one_of=[_ref(member) for member in _STREAM_EVENTS])),
                },
            ),
            **_errors("400", "401", "403", "404", "413", "415", "429", "500", "502", "503", "504"),
        }


@dataclass
class ResponseRetrieveOperation(Operation):
    def __post_init__(self) -> None:
        self.responses = {"200": _json(ResponseObject, "The stored response."), **_errors("401", "404", "429")}


@dataclass
class ResponseDeleteOperation(Operation):
    def __post_init__(self) -> None:
        self.responses = {"200": _json(ResponseDeleted, "Deleted, with its input items."), **_errors("401", "404", "429")}


@dataclass
class ResponseInputItemsOperation(Operation):
    def __post_init__(self) -> None:
        self.responses = {"200": _json(ResponseItemList, "One page of the response's input items."), **_errors("400", "401", "404", "429")}
