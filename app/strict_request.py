"""The Litestar request class of the typed (non-chat) routes: issue 10's JSON rules and today's blank parameters.

Litestar decodes a JSON body with msgspec, which is not the body parser of
the rest of the API: its refusals are worded differently, and a body's
acceptance must not depend on the route. :meth:`StrictJSONRequest.json` hands
the body to :func:`app.jsonbody.parse_json_body` instead (no ``NaN``, no lone
surrogates, nesting at most 128, the same 400 ``invalid_json``); the route's
Struct is then converted from that value by Litestar as usual.

A blank query value (``?limit=``) counts as an absent one, so it takes the
parameter's default, as the routes did before they were typed; Litestar
would try to convert ``""`` and refuse it.
"""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar._parsers import parse_query_string
from litestar.types import Empty

from toolrelay.app.jsonbody import parse_json_body

__all__ = ["StrictJSONRequest"]


class StrictJSONRequest(Request[Any, Any, Any]):
    __slots__ = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Litestar's parameter extractor reads the parsed pairs from here (and parses
        # the query string itself only while this is Empty).
        self._parsed_query = tuple(pair for pair in parse_query_string(self.scope.get("query_string", b"")) if pair[1])

    async def json(self) -> Any:
        if self._json is Empty:
            self._json = parse_json_body(await self.body())
        return self._json
