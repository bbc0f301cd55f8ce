"""Checks on a Chat Completions request that we can make ourselves.

Everything the OpenAI API accepts is accepted and forwarded unchanged; this
module only refuses what OpenAI would refuse with a 400, with ``param`` naming
the offending field the way OpenAI does (``messages[2].role``,
``tools[0].function.name``). It runs on every request, so it is plain Python
over the parsed dict rather than a schema engine.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from toolrelay.app.errors import OpenAIError, invalid_request
from toolrelay.app.schema_check import (
    DEFAULT_LIMITS,
    SchemaBudget,
    SchemaLimits,
    check_schema_shape,
)

_ROLES = frozenset(("system", "developer", "user", "assistant", "tool", "function"))
_USER_PART_TYPES = frozenset(("text", "image_url", "input_audio", "file"))
_TEXT_ONLY_PART_TYPES = frozenset(("text",))
_ASSISTANT_PART_TYPES = frozenset(("text", "refusal"))
_FUNCTION_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_TOOL_CHOICE_STRINGS = frozenset(("none", "auto", "required"))
_RESPONSE_FORMATS = frozenset(("text", "json_object", "json_schema"))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _wrong_type(param: str, expected: str, value: Any) -> OpenAIError:
    return invalid_request(
        f"Invalid type for '{param}': expected {expected}, but got {_type_name(value)} instead.",
        param=param,
        code="invalid_type",
    )


def _number_in(body: dict[str, Any], key: str, low: float, high: float, integer: bool = False) -> None:
    value = body.get(key)
    if value is None:
        return
    if integer and not _is_int(value):
        raise _wrong_type(key, "an integer", value)
    if not integer and not _is_number(value):
        raise _wrong_type(key, "a decimal number", value)
    if value < low:
        raise invalid_request(
            f"Invalid '{key}': decimal below minimum value. Expected a value >= {low}, but got {value} instead.",
            param=key,
            code="decimal_below_min_value" if not integer else "integer_below_min_value",
        )
    if value > high:
        raise invalid_request(
            f"Invalid '{key}': decimal above maximum value. Expected a value <= {high}, but got {value} instead.",
            param=key,
            code="decimal_above_max_value" if not integer else "integer_above_max_value",
        )


def _bool(body: dict[str, Any], key: str, prefix: str = "") -> None:
    value = body.get(key)
    if value is not None and not isinstance(value, bool):
        raise _wrong_type(prefix + key, "a boolean", value)


def _string(body: dict[str, Any], key: str, prefix: str = "") -> None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise _wrong_type(prefix + key, "a string", value)


def check_json_schema(schema: Any, param: str, budget: SchemaBudget) -> None:
    """The cheap part only: an object, within the size and depth caps. Meta-validation
    is :class:`app.schema_check.SchemaChecker`'s, after authentication and admission."""
    if not isinstance(schema, dict):
        raise _wrong_type(param, "an object", schema)
    check_schema_shape(schema, param, budget)


def _check_content_parts(parts: list[Any], allowed: frozenset[str], param: str) -> None:
    for i, part in enumerate(parts):
        where = f"{param}[{i}]"
        if not isinstance(part, dict):
            raise _wrong_type(where, "an object", part)
        kind = part.get("type")
        if not isinstance(kind, str):
            raise invalid_request(f"Missing required parameter: '{where}.type'.", param=f"{where}.type", code="missing_required_parameter")
        if kind not in allowed:
            raise invalid_request(
                f"Invalid value: '{kind}'. Supported values are: {', '.join(repr(a) for a in sorted(allowed))}.",
                param=f"{where}.type",
                code="invalid_value",
            )
        if kind == "text" and not isinstance(part.get("text"), str):
            raise _wrong_type(f"{where}.text", "a string", part.get("text"))
        if kind == "refusal" and not isinstance(part.get("refusal"), str):
            raise _wrong_type(f"{where}.refusal", "a string", part.get("refusal"))
        if kind == "image_url":
            image = part.get("image_url")
            if not isinstance(image, dict) or not isinstance(image.get("url"), str):
                raise invalid_request(
                    f"Missing required parameter: '{where}.image_url.url'.", param=f"{where}.image_url.url", code="missing_required_parameter"
                )


def _check_content(message: dict[str, Any], role: str, param: str, required: bool) -> None:
    if "content" not in message or message["content"] is None:
        if required:
            raise invalid_request(f"Missing required parameter: '{param}.content'.", param=f"{param}.content", code="missing_required_parameter")
        return
    content = message["content"]
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise _wrong_type(f"{param}.content", "one of a string or array of objects", content)
    allowed = _USER_PART_TYPES if role == "user" else _ASSISTANT_PART_TYPES if role == "assistant" else _TEXT_ONLY_PART_TYPES
    _check_content_parts(content, allowed, f"{param}.content")


def _check_tool_calls(calls: Any, param: str) -> None:
    if not isinstance(calls, list):
        raise _wrong_type(param, "an array", calls)
    for i, call in enumerate(calls):
        where = f"{param}[{i}]"
        if not isinstance(call, dict):
            raise _wrong_type(where, "an object", call)
        if not isinstance(call.get("id"), str):
            raise invalid_request(f"Missing required parameter: '{where}.id'.", param=f"{where}.id", code="missing_required_parameter")
        function = call.get("function")
        if not isinstance(function, dict):
            raise invalid_request(f"Missing required parameter: '{where}.function'.", param=f"{where}.function", code="missing_required_parameter")
        if not isinstance(function.get("name"), str):
            raise invalid_request(f"Missing required parameter: '{where}.function.name'.", param=f"{where}.function.name", code="missing_required_parameter")
        if not isinstance(function.get("arguments"), str):
            raise _wrong_type(f"{where}.function.arguments", "a string", function.get("arguments"))


def check_messages(messages: Any, max_messages: int) -> None:
    if messages is None:
        raise invalid_request("Missing required parameter: 'messages'.", param="messages", code="missing_required_parameter")
    if not isinstance(messages, list):
        raise _wrong_type("messages", "an array", messages)
    if not messages:
        raise invalid_request(
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.", param="messages", code="empty_array"
        )
    if len(messages) > max_messages:
        raise invalid_request(
            f"Invalid 'messages': array too long. Expected an array with maximum length {max_messages}, but got an array with length {len(messages)} instead.",
            param="messages",
            code="array_above_max_length",
        )
    for i, message in enumerate(messages):
        param = f"messages[{i}]"
        if not isinstance(message, dict):
            raise _wrong_type(param, "an object", message)
        role = message.get("role")
        if role is None:
            raise invalid_request(f"Missing required parameter: '{param}.role'.", param=f"{param}.role", code="missing_required_parameter")
        if role not in _ROLES:
            raise invalid_request(
                f"Invalid value: '{role}'. Supported values are: 'system', 'assistant', 'user', 'function', 'tool', and 'developer'.",
                param=f"{param}.role",
                code="invalid_value",
            )
        _string(message, "name", param + ".")
        if role == "assistant":
            has_calls = bool(message.get("tool_calls")) or message.get("function_call") is not None
            _check_content(message, role, param, required=False)
            if message.get("tool_calls") is not None:
                _check_tool_calls(message["tool_calls"], f"{param}.tool_calls")
            if not has_calls and message.get("content") is None and message.get("refusal") is None and message.get("audio") is None:
                raise invalid_request(f"Missing required parameter: '{param}.content'.", param=f"{param}.content", code="missing_required_parameter")
        elif role == "tool":
            _check_content(message, role, param, required=True)
            if not isinstance(message.get("tool_call_id"), str):
                raise invalid_request(f"Missing required parameter: '{param}.tool_call_id'.", param=f"{param}.tool_call_id", code="missing_required_parameter")
        elif role == "function":
            if not isinstance(message.get("name"), str):
                raise invalid_request(f"Missing required parameter: '{param}.name'.", param=f"{param}.name", code="missing_required_parameter")
        else:
            _check_content(message, role, param, required=True)


def check_tools(tools: Any, max_tools: int, budget: SchemaBudget) -> None:
    if not isinstance(tools, list):
        raise _wrong_type("tools", "an array", tools)
    if len(tools) > max_tools:
        raise invalid_request(
            f"Invalid 'tools': array too long. Expected an array with maximum length {max_tools}, but got an array with length {len(tools)} instead.",
            param="tools",
            code="array_above_max_length",
        )
    seen: set[str] = set()
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        if not isinstance(tool, dict):
            raise _wrong_type(where, "an object", tool)
        kind = tool.get("type", "function")
        if kind != "function":
            # Custom and hosted tool types are the upstream's business.
            continue
        function = tool.get("function")
        if not isinstance(function, dict):
            raise invalid_request(f"Missing required parameter: '{where}.function'.", param=f"{where}.function", code="missing_required_parameter")
        name = function.get("name")
        if not isinstance(name, str):
            raise invalid_request(f"Missing required parameter: '{where}.function.name'.", param=f"{where}.function.name", code="missing_required_parameter")
        if not _FUNCTION_NAME.match(name):
            raise invalid_request(
                f"Invalid '{where}.function.name': string does not match pattern. Expected a string that matches the pattern '^[a-zA-Z0-9_-]+$'.",
                param=f"{where}.function.name",
                code="invalid_value",
            )
        if name in seen:
            raise invalid_request(f"Invalid 'tools': duplicate function name '{name}'.", param=f"{where}.function.name", code="invalid_value")
        seen.add(name)
        _string(function, "description", f"{where}.function.")
        _bool(function, "strict", f"{where}.function.")
        if function.get("parameters") is not None:
            check_json_schema(function["parameters"], f"{where}.function.parameters", budget)


def check_tool_choice(body: dict[str, Any]) -> None:
    choice = body.get("tool_choice")
    if choice is None:
        return
    tools = body.get("tools")
    if not tools:
        raise invalid_request("Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified.", param="tool_choice", code=None)
    if isinstance(choice, str):
        if choice not in _TOOL_CHOICE_STRINGS:
            raise invalid_request(
                f"Invalid value: '{choice}'. Supported values are: 'none', 'auto', and 'required'.",
                param="tool_choice",
                code="invalid_value",
            )
        return
    if not isinstance(choice, dict):
        raise _wrong_type("tool_choice", "one of a string or object", choice)
    if choice.get("type") == "function":
        function = choice.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(name, str):
            raise invalid_request(
                "Missing required parameter: 'tool_choice.function.name'.", param="tool_choice.function.name", code="missing_required_parameter"
            )
        names = {t.get("function", {}).get("name") for t in tools if isinstance(t, dict) and isinstance(t.get("function"), dict)}
        if name not in names:
            raise invalid_request(
                f"Invalid value for 'tool_choice': function '{name}' is not one of the provided tools.",
                param="tool_choice",
                code="invalid_value",
            )


def check_response_format(value: Any, budget: SchemaBudget) -> None:
    if value is None:
        return
    if not isinstance(value, dict):
        raise _wrong_type("response_format", "an object", value)
    kind = value.get("type")
    if kind not in _RESPONSE_FORMATS:
        raise invalid_request(
            f"Invalid value: '{kind}'. Supported values are: 'text', 'json_object', and 'json_schema'.",
            param="response_format.type",
            code="invalid_value",
        )
    if kind == "json_schema":
        spec = value.get("json_schema")
        if not isinstance(spec, dict):
            raise invalid_request(
                "Missing required parameter: 'response_format.json_schema'.", param="response_format.json_schema", code="missing_required_parameter"
            )
        name = spec.get("name")
        if not isinstance(name, str):
            raise invalid_request(
                "Missing required parameter: 'response_format.json_schema.name'.", param="response_format.json_schema.name", code="missing_required_parameter"
            )
        if not _FUNCTION_NAME.match(name):
            raise invalid_request(
                "Invalid 'response_format.json_schema.name': string does not match pattern. Expected a string that matches the pattern '^[a-zA-Z0-9_-]+$'.",
                param="response_format.json_schema.name",
                code="invalid_value",
            )
        if spec.get("schema") is not None:
            check_json_schema(spec["schema"], "response_format.json_schema.schema", budget)


def check_stop(value: Any) -> None:
    if value is None or isinstance(value, str):
        return
    if not isinstance(value, list):
        raise _wrong_type("stop", "one of a string or array of strings", value)
    if len(value) > 4:
        raise invalid_request(
            f"Invalid 'stop': array too long. Expected an array with maximum length 4, but got an array with length {len(value)} instead.",
            param="stop",
            code="array_above_max_length",
        )
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise _wrong_type(f"stop[{i}]", "a string", item)


def check_logit_bias(value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, dict):
        raise _wrong_type("logit_bias", "an object", value)
    for token, bias in value.items():
        if not _is_number(bias):
            raise _wrong_type(f"logit_bias.{token}", "a number", bias)
        if not -100 <= bias <= 100:
            raise invalid_request(
                f"Invalid 'logit_bias': bias for token {token} must be between -100 and 100.",
                param="logit_bias",
                code="invalid_value",
            )


def _check_stream(body: dict[str, Any]) -> None:
    """``stream`` a boolean; ``stream_options`` an object, only with ``stream``."""
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _wrong_type("stream", "a boolean", stream)
    options = body.get("stream_options")
    if options is not None:
        if not isinstance(options, dict):
            raise _wrong_type("stream_options", "an object", options)
        if not stream:
            raise invalid_request("The 'stream_options' parameter is only allowed when 'stream' is enabled.", param="stream_options", code=None)
        _bool(options, "include_usage", "stream_options.")


def check_request(body: Any, *, max_messages: int = 2048, max_tools: int = 128, schema_limits: SchemaLimits = DEFAULT_LIMITS) -> None:
    """Raise :class:`OpenAIError` (400) for a request OpenAI would refuse."""
    if not isinstance(body, dict):
        raise invalid_request("The request body must be a JSON object.", code="invalid_json")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise _wrong_type("model", "a string", model)
    check_messages(body.get("messages"), max_messages)
    _check_stream(body)
    _number_in(body, "temperature", 0, 2)
    _number_in(body, "top_p", 0, 1)
    _number_in(body, "n", 1, 128, integer=True)
    _number_in(body, "presence_penalty", -2, 2)
    _number_in(body, "frequency_penalty", -2, 2)
    _number_in(body, "max_tokens", 1, 2**31 - 1, integer=True)
    _number_in(body, "max_completion_tokens", 1, 2**31 - 1, integer=True)
    _number_in(body, "top_logprobs", 0, 20, integer=True)
    seed = body.get("seed")
    if seed is not None and not _is_int(seed):
        raise _wrong_type("seed", "an integer", seed)
    _bool(body, "logprobs")
    _bool(body, "parallel_tool_calls")
    _bool(body, "store")
    _string(body, "user")
    if body.get("top_logprobs") is not None and not body.get("logprobs"):
        raise invalid_request("Invalid value for 'top_logprobs': 'logprobs' must be set to true when 'top_logprobs' is used.", param="top_logprobs", code=None)
    check_stop(body.get("stop"))
    check_logit_bias(body.get("logit_bias"))
    budget = SchemaBudget(schema_limits)
    check_response_format(body.get("response_format"), budget)
    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise _wrong_type("metadata", "an object", metadata)
    if body.get("tools") is not None:
        check_tools(body["tools"], max_tools, budget)
    check_tool_choice(body)


# -- /v1/embeddings and the legacy /v1/completions -----------------------------

#: OpenAI's cap on the inputs of one embeddings request (and ours on a legacy prompt list).
MAX_INPUT_ITEMS = 2048
_ENCODING_FORMATS = frozenset(("float", "base64"))
_INPUT_SHAPES = "one of a string, an array of strings, an array of integers, or an array of arrays of integers"


@dataclass(frozen=True, slots=True)
class PromptInput:
    """What an ``input`` or ``prompt`` asks the model to read: texts, or token ids (counted, never decoded)."""

    texts: list[str]
    token_ids: int = 0


def _is_token_array(value: Any) -> bool:
    return isinstance(value, list) and all(_is_int(token) and token >= 0 for token in value)


def read_prompt_input(value: Any, param: str, *, allow_empty_text: bool) -> PromptInput:
    """Check an embeddings ``input`` or a completions ``prompt`` (the four shapes OpenAI takes)."""
    if value is None:
        raise invalid_request(f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter")
    if isinstance(value, str):
        if not value and not allow_empty_text:
            raise invalid_request(f"Invalid '{param}': empty string. Expected a non-empty string.", param=param, code="invalid_value")
        return PromptInput([value])
    if not isinstance(value, list):
        raise _wrong_type(param, _INPUT_SHAPES, value)
    items: list[Any] = value
    if not items:
        raise invalid_request(
            f"Invalid '{param}': empty array. Expected an array with minimum length 1, but got an empty array instead.", param=param, code="empty_array"
        )
    if len(items) > MAX_INPUT_ITEMS:
        raise invalid_request(
            f"Invalid '{param}': array too long. Expected an array with maximum length {MAX_INPUT_ITEMS}, but got an array with length {len(items)} instead.",
            param=param,
            code="array_above_max_length",
        )
    first = items[0]
    if isinstance(first, str):
        for i, item in enumerate(items):
            if not isinstance(item, str):
                raise _wrong_type(f"{param}[{i}]", "a string", item)
            if not item and not allow_empty_text:
                raise invalid_request(f"Invalid '{param}[{i}]': empty string. Expected a non-empty string.", param=f"{param}[{i}]", code="invalid_value")
        return PromptInput(items)
    if _is_int(first):
        if not _is_token_array(items):
            raise _wrong_type(param, "an array of non-negative integers (token ids)", items)
        return PromptInput([], len(items))
    if not isinstance(first, list):
        raise _wrong_type(param, _INPUT_SHAPES, first)
    count = 0
    for i, item in enumerate(items):
        if not isinstance(item, list) or not item or not _is_token_array(item):
            raise _wrong_type(f"{param}[{i}]", "a non-empty array of token ids", item)
        count += len(item)
    return PromptInput([], count)


def _model(body: dict[str, Any]) -> None:
    model = body.get("model")
    if model is None:
        raise invalid_request("Missing required parameter: 'model'.", param="model", code="missing_required_parameter")
    if not isinstance(model, str):
        raise _wrong_type("model", "a string", model)


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise invalid_request("The request body must be a JSON object.", code="invalid_json")
    return body


def check_embeddings_request(body: Any) -> PromptInput:
    """Raise :class:`OpenAIError` (400) for an embeddings request OpenAI would refuse; return its input."""
    body = _object(body)
    _model(body)
    inputs = read_prompt_input(body.get("input"), "input", allow_empty_text=False)
    fmt = body.get("encoding_format")
    if fmt is not None and fmt not in _ENCODING_FORMATS:
        if not isinstance(fmt, str):
            raise _wrong_type("encoding_format", "a string", fmt)
        raise invalid_request(f"Invalid value: '{fmt}'. Supported values are: 'base64' and 'float'.", param="encoding_format", code="invalid_value")
    _number_in(body, "dimensions", 1, 2**31 - 1, integer=True)
    _string(body, "user")
    return inputs


def check_legacy_completion_request(body: Any) -> PromptInput:
    """Raise :class:`OpenAIError` (400) for a legacy completions request OpenAI would refuse; return its prompt."""
    body = _object(body)
    _model(body)
    prompt = read_prompt_input(body.get("prompt"), "prompt", allow_empty_text=True)
    _check_stream(body)
    _number_in(body, "max_tokens", 0, 2**31 - 1, integer=True)
    _number_in(body, "temperature", 0, 2)
    _number_in(body, "top_p", 0, 1)
    _number_in(body, "n", 1, 128, integer=True)
    _number_in(body, "best_of", 1, 20, integer=True)
    _number_in(body, "logprobs", 0, 5, integer=True)
    _number_in(body, "presence_penalty", -2, 2)
    _number_in(body, "frequency_penalty", -2, 2)
    seed = body.get("seed")
    if seed is not None and not _is_int(seed):
        raise _wrong_type("seed", "an integer", seed)
    _bool(body, "echo")
    _string(body, "suffix")
    _string(body, "user")
    check_stop(body.get("stop"))
    check_logit_bias(body.get("logit_bias"))
    return prompt
