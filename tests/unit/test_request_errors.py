"""Litestar's validation errors become the OpenAI 400s the typed routes answered before (app/request_errors.py)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Annotated, Any, Literal

import msgspec
import pytest
from litestar.exceptions import ValidationException

from toolrelay.app.request_errors import openai_validation_error


class Body(msgspec.Struct, kw_only=True):
    text: str
    tags: list[str] | None = None
    count: int | None = None


def _field(annotation: Any, ge: int | None = None, le: int | None = None) -> SimpleNamespace:
    return SimpleNamespace(annotation=annotation, kwarg_definition=SimpleNamespace(ge=ge, le=le))


SIGNATURE = {
    "limit": _field(Annotated[int, "meta"], ge=1, le=100),
    "floor": _field(int, ge=1),
    "order": _field(Literal["asc", "desc"]),
    "mode": _field(Literal["a", "b", "c"] | None),
    "tag": _field(list[str] | None),
    "data": _field(Body),
}


def _refusal(message: str, key: str, source: str = "query") -> ValidationException:
    return ValidationException("Validation failed for GET /x?secret=1", extra=[{"message": message, "key": key, "source": source}])


@pytest.mark.parametrize(
    ("message", "key", "source", "query", "expected"),
    [
        ("Expected `int`, got `str`", "limit", "query", {"limit": "ten"}, ("Invalid 'limit': expected an integer, got 'ten'.", "limit", "invalid_type")),
        (
            "Expected `int`, got `str`",
            "limit",
            "query",
            {"limit": "x" * 100},
            (f"Invalid 'limit': expected an integer, got '{'x' * 40}'.", "limit", "invalid_type"),
        ),
        ("Expected `int` >= 1", "limit", "query", {"limit": "0"}, ("Invalid 'limit': expected a value between 1 and 100, got 0.", "limit", "invalid_value")),
        (
            "Expected `int` <= 100",
            "limit",
            "query",
            {"limit": "1e3"},
            ("Invalid 'limit': expected a value between 1 and 100, got '1e3'.", "limit", "invalid_value"),
        ),
        ("Expected `int` >= 1", "floor", "query", {"floor": "-2"}, ("Invalid 'floor': expected int >= 1, got -2.", "floor", "invalid_value")),
        (
            "Invalid enum value 'up'",
            "order",
            "query",
            {"order": "up"},
            ("Invalid 'order': 'up'. Supported values are: 'asc' and 'desc'.", "order", "invalid_value"),
        ),
        ("Invalid enum value 'd'", "mode", "query", {"mode": "d"}, ("Invalid 'mode': 'd'. Supported values are: 'a', 'b' and 'c'.", "mode", "invalid_value")),
        ("Expected `str`, got `int`", "tag", "query", {"tag": "1"}, ("Invalid 'tag': expected an array of strings, got '1'.", "tag", "invalid_type")),
        ("Object missing required field `text`", "data", "body", {}, ("Missing required parameter: 'text'.", "text", "missing_required_parameter")),
        ("Expected `object`, got `array`", "data", "body", {}, ("Missing required parameter: 'text'.", "text", "missing_required_parameter")),
        ("Expected `array | null`, got `str`", "tags", "body", {}, ("Invalid 'tags': expected an array of strings.", "tags", "invalid_type")),
        ("Expected `str`, got `int`", "tags[3]", "body", {}, ("Invalid 'tags': expected an array of strings.", "tags", "invalid_type")),
        ("Expected `str`, got `int`", "text", "body", {}, ("Invalid 'text': expected a string.", "text", "invalid_type")),
        ("Expected `int | null`, got `str`", "count", "body", {}, ("Invalid 'count': expected an integer.", "count", "invalid_type")),
    ],
)
def test_wording(message: str, key: str, source: str, query: dict[str, str], expected: tuple[str, str, str]) -> None:
    err = openai_validation_error(_refusal(message, key, source), signature=SIGNATURE, query=query)
    assert (err.status, err.type) == (400, "invalid_request_error")
    assert (err.message, err.param, err.code) == expected


def test_no_body_is_the_parsers_empty_document() -> None:
    err = openai_validation_error(_refusal("'data'", "data", "body"), signature=SIGNATURE, query={})
    assert err.code == "invalid_json" and err.param is None
    assert "empty document" in err.message


@pytest.mark.parametrize("extra", [None, [], ["not a dict"], {"message": "x"}])
def test_a_refusal_without_details_is_a_plain_400(extra: Any) -> None:
    err = openai_validation_error(ValidationException("Validation failed for GET /x?user=secret", extra=extra), signature={}, query={})
    assert (err.status, err.param, err.code) == (400, None, None)
    assert "secret" not in err.message  # Litestar's detail repeats the query string: never echoed


def test_unknown_parameters_still_get_a_400() -> None:
    err = openai_validation_error(_refusal("Expected `int`, got `str`", "other"), signature={}, query={"other": "x"})
    assert (err.param, err.code) == ("other", "invalid_type")
    assert err.message == "Invalid 'other': expected a valid value, got 'x'."
