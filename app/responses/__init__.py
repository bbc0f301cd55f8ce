"""The Responses API over Chat-Completions upstreams: translation both ways, the event stream, stored responses.

The HTTP side is :mod:`app.routes.responses`; these modules do no HTTP.
"""

from toolrelay.app.responses.background import CUT_SHORT, BackgroundRuns, BackgroundTurn, background_error
from toolrelay.app.responses.store import ResponseStorage, ResponseStore, StoredResponse, response_scope
from toolrelay.app.responses.stream import ResponseStreamWriter, failure_error
from toolrelay.app.responses.translate import (
    ResponsesRequest,
    chat_payload,
    input_items,
    new_item_id,
    new_response_id,
    output_items,
    parse_request,
    response_object,
    responses_usage,
)

__all__ = [
    "CUT_SHORT",
    "BackgroundRuns",
    "BackgroundTurn",
    "ResponseStorage",
    "ResponseStore",
    "ResponseStreamWriter",
    "ResponsesRequest",
    "StoredResponse",
    "background_error",
    "chat_payload",
    "failure_error",
    "input_items",
    "new_item_id",
    "new_response_id",
    "output_items",
    "parse_request",
    "response_object",
    "response_scope",
    "responses_usage",
]
