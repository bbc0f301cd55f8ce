"""The one parser for JSON request bodies: strict JSON, bounded depth, exact big integers.

Every endpoint that reads a JSON body uses :func:`parse_json_body`, so all of
them refuse the same things with the same 400 (``code: invalid_json``):

- ``NaN``, ``Infinity``, ``-Infinity`` and numbers that overflow a double:
  not JSON, and a float the ledger, orjson and upstreams cannot write back.
- Lone surrogates (``"\\ud800"``) in keys or values: not encodable as UTF-8,
  so anything that later writes the string (the usage ledger's writer thread,
  the upstream body) would fail far from the request that caused it.
- Nesting deeper than :data:`MAX_JSON_DEPTH`: the standard library's parser
  recurses and a body 1,100 levels deep was a 500 with a traceback.

orjson decides all three (it is strict and refuses more than 1,024 levels);
the depth cap is checked on its result. orjson turns integers beyond 64 bits
into floats, so a body with a long run of digits is parsed a second time by
the standard library, which keeps them exact (a ``seed`` is forwarded
unchanged). That second parse only ever sees a body orjson already accepted.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

from toolrelay.app.errors import OpenAIError, invalid_request

#: A decoded JSON value whose containers are not yet checked. Declaring a
#: variable with it (rather than ``Any``) lets ``isinstance`` narrow it to
#: ``dict[str, Any]``/``list[Any]`` for the type checker at no runtime cost:
#: ``isinstance`` on ``Any`` gives a dict of unknowns that strict checking refuses.
JSONValue = dict[str, Any] | list[Any] | str | int | float | bool | None

# Real request bodies nest about 10 levels; a tool's JSON Schema adds two
# levels per schema level (``properties`` -> name -> schema), so 128 leaves
# room for schemas 50+ levels deep while keeping every walk over the body
# (validation, token counting, the stdlib parser) far from Python's recursion limit.
MAX_JSON_DEPTH = 128

# 19+ digits: possibly outside the range orjson keeps as an int (below
# -2**63 or above 2**64 - 1), where it silently returns a float.
_LONG_DIGIT_RUN = re.compile(rb"\d{19}")


def invalid_json(reason: str) -> OpenAIError:
    return invalid_request(
        f"We could not parse the JSON body of your request. The API expects a JSON payload; what was sent was not valid JSON ({reason}).",
        code="invalid_json",
    )


def json_depth_exceeds(value: JSONValue, limit: int) -> bool:
    """True when containers in ``value`` nest deeper than ``limit`` (the top level is depth 1).

    Iterative, so the check itself cannot hit the recursion limit.
    """
    if not isinstance(value, (dict, list)):
        return False
    stack: list[tuple[dict[str, Any] | list[Any], int]] = [(value, 1)]
    pop, push = stack.pop, stack.append
    child: JSONValue
    while stack:
        node, depth = pop()
        if depth > limit:
            return True
        children = node.values() if isinstance(node, dict) else node
        for child in children:
            if isinstance(child, (dict, list)):
                push((child, depth + 1))
    return False


def parse_json_body(raw: bytes, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Parse a request body or raise a 400 :class:`OpenAIError` saying why it is not acceptable JSON."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        # orjson's message names the problem and its position in the client's own input, nothing else.
        raise invalid_json(str(exc)) from None
    # Fewer brackets than the cap cannot nest deeper than it: most bodies skip the walk.
    if raw.count(b"{") + raw.count(b"[") > max_depth and json_depth_exceeds(value, max_depth):
        raise invalid_json(f"nested deeper than {max_depth} levels")
    if _LONG_DIGIT_RUN.search(raw):
        try:
            # The stdlib keeps huge integers exact, so they are forwarded unchanged.
            value = json.loads(raw)
        except (ValueError, RecursionError):
            raise invalid_json("unreadable number") from None
    return value
