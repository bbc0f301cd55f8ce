"""Litestar's validation errors as OpenAI's: a 400 whose ``param`` names the field and ``code`` says why.

Litestar refuses a typed query parameter or a Struct body with a
``ValidationException`` whose ``extra`` holds, per field, msgspec's message
(``Expected `int` >= 1``), the field's name (``limit``, ``tags[0]``; ``data``
for the body as a whole) and its source. :func:`openai_validation_error`
words it the way the routes did before they were typed, reading the bounds
and choices from the handler's own signature, so the two cannot drift:

- a value of the wrong type: ``Invalid 'limit': expected an integer, got 'ten'.``
  (``invalid_type``; a body field is not quoted back)
- out of bounds: ``Invalid 'limit': expected a value between 1 and 100, got 0.`` (``invalid_value``)
- not one of the choices: ``Invalid 'order': 'x'. Supported values are: 'asc' and 'desc'.`` (``invalid_value``)
- a missing field, or a body that is not an object: ``Missing required parameter: 'text'.``
  (``missing_required_parameter``)
- no body at all: the JSON parser's own 400 ``invalid_json``.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
from litestar.exceptions import ValidationException

from toolrelay.app.errors import OpenAIError, invalid_request
from toolrelay.app.jsonbody import parse_json_body

__all__ = ["openai_validation_error"]

_MISSING_FIELD = re.compile(r"Object missing required field `([^`]+)`")
_BOUND = re.compile(r"^Expected `[^`]+` (?:>=|<=|>|<) ")
_ENUM = "Invalid enum value "
_FIELD_NAME = re.compile(r"^[^.\[]+")
_RAW_CHARS = 40
_CHOICE_CHARS = 20

_PHRASES: dict[Any, tuple[str, str]] = {
    int: ("an integer", "integers"),
    str: ("a string", "strings"),
    float: ("a number", "numbers"),
    bool: ("a boolean", "booleans"),
}


def openai_validation_error(exc: ValidationException, *, signature: Mapping[str, Any], query: Mapping[str, str]) -> OpenAIError:
    """``exc`` as the OpenAI-shaped 400.

    ``signature`` maps the handler's parameter names to their Litestar field
    definitions (``annotation``, ``kwarg_definition`` with ``ge``/``le``);
    ``query`` is the request's query string (first value per name), quoted
    back in the message as the client sent it.
    """
    problems = exc.extra if isinstance(exc.extra, list) else []
    problem = next((p for p in problems if isinstance(p, dict)), None)
    if problem is None:
        return invalid_request("Invalid request.")
    message = str(problem.get("message", ""))
    key = str(problem.get("key", ""))
    if str(problem.get("source", "")) == "body":
        return _body_error(message, key, signature.get("data"))
    match = _FIELD_NAME.match(key)
    name = match.group(0) if match else key
    field = signature.get(name)
    annotation = _unwrapped(getattr(field, "annotation", None))
    raw = query.get(name, "")
    if message.startswith(_ENUM):
        choices = _choices(annotation)
        return invalid_request(f"Invalid '{name}': '{raw[:_CHOICE_CHARS]}'. Supported values are: {choices}.", param=name, code="invalid_value")
    if _BOUND.match(message):
        kwarg = getattr(field, "kwarg_definition", None)
        low, high = getattr(kwarg, "ge", None), getattr(kwarg, "le", None)
        got = _as_int(raw)
        expected = f"a value between {low} and {high}" if low is not None and high is not None else message[len("Expected ") :].replace("`", "")
        return invalid_request(f"Invalid '{name}': expected {expected}, got {got}.", param=name, code="invalid_value")
    if "missing" in message.lower() and name not in query:
        return invalid_request(f"Missing required parameter: '{name}'.", param=name, code="missing_required_parameter")
    return invalid_request(f"Invalid '{name}': expected {_phrase(annotation)}, got '{raw[:_RAW_CHARS]}'.", param=name, code="invalid_type")


def _body_error(message: str, key: str, data: Any) -> OpenAIError:
    struct = _unwrapped(getattr(data, "annotation", None))
    if key == "data":
        missing = _MISSING_FIELD.search(message)
        if missing is not None:
            name = missing.group(1)
        elif message.startswith("Expected `object`"):
            # Not an object: it lacks every required field; name the first, as a missing one.
            name = _first_required(struct)
        else:
            # No body at all (Litestar passes no value): the parser's own answer to an empty document.
            return _empty_body_error()
        return invalid_request(f"Missing required parameter: '{name}'.", param=name, code="missing_required_parameter")
    match = _FIELD_NAME.match(key)
    name = match.group(0) if match else key
    return invalid_request(f"Invalid '{name}': expected {_phrase(_field_type(struct, name))}.", param=name, code="invalid_type")


def _empty_body_error() -> OpenAIError:
    try:
        parse_json_body(b"")
    except OpenAIError as exc:
        return exc
    return invalid_request("The request body is empty.", code="invalid_json")  # pragma: no cover - b"" never parses


def _unwrapped(annotation: Any) -> Any:
    """``X`` of ``X | None`` and of ``Annotated[X, ...]``."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            kept = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(kept) != 1:
                return annotation
            annotation = kept[0]
        else:
            return annotation


def _phrase(annotation: Any) -> str:
    annotation = _unwrapped(annotation)
    if annotation in _PHRASES:
        return _PHRASES[annotation][0]
    origin = typing.get_origin(annotation)
    if isinstance(origin, type) and issubclass(origin, Sequence) and origin is not str:
        (item,) = typing.get_args(annotation) or (Any,)
        plural = _PHRASES.get(_unwrapped(item), (None, "values"))[1]
        return f"an array of {plural}"
    if isinstance(annotation, type) and issubclass(annotation, msgspec.Struct):
        return "an object"
    return "a valid value"


def _choices(annotation: Any) -> str:
    values = [f"'{v}'" for v in typing.get_args(annotation)] if typing.get_origin(annotation) is typing.Literal else []
    if len(values) < 2:
        return ", ".join(values)
    return ", ".join(values[:-1]) + " and " + values[-1]


def _first_required(struct: Any) -> str:
    if isinstance(struct, type) and issubclass(struct, msgspec.Struct):
        for field in msgspec.structs.fields(struct):
            if field.required:
                return field.encode_name
    return "body"


def _field_type(struct: Any, name: str) -> Any:
    if isinstance(struct, type) and issubclass(struct, msgspec.Struct):
        for field in msgspec.structs.fields(struct):
            if field.encode_name == name:
                return field.type
    return None


def _as_int(raw: str) -> Any:
    try:
        return int(raw)
    except ValueError:
        return f"'{raw[:_RAW_CHARS]}'"
