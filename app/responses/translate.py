"""Responses API requests to Chat Completions requests, and chat answers back to Responses output items.

Pure functions over decoded JSON (no I/O): the route (:mod:`app.routes.responses`)
validates a ``POST /v1/responses`` body into a :class:`ResponsesRequest`, turns
it into the chat body a Chat-Completions upstream understands, and turns the
merged answer (:mod:`app.accumulate`) into ``output`` items and ``usage``.

Shapes follow the OpenAI API reference (the ``openai`` SDK's
``types/responses`` models), field for field. Unknown request fields are
ignored, as OpenAI does; hosted tools and items a chat upstream cannot run are
refused with a 400 naming the ``param``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, cast

from toolrelay.app.errors import OpenAIError, invalid_request
from toolrelay.app.ids import new_item_id, new_response_id

__all__ = [
    "ResponsesRequest",
    "chat_payload",
    "input_items",
    "new_item_id",
    "new_response_id",
    "output_items",
    "parse_request",
    "refusal_item",
    "response_object",
    "responses_usage",
]

_ROLES = frozenset({"user", "system", "developer", "assistant"})
_EFFORTS = frozenset({"none", "minimal", "low", "medium", "high", "xhigh"})


@dataclass(slots=True)
class ResponsesRequest:
    """A validated ``POST /v1/responses`` body: what the translation and the echo need."""

    model: str
    items: list[dict[str, Any]]
    stream: bool = False
    store: bool = True
    instructions: str | None = None
    previous_response_id: str | None = None
    tools: list[dict[str, Any]] = field(default_factory=lambda: [])
    tool_choice: Any = "auto"
    parallel_tool_calls: bool = True
    max_output_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    text: dict[str, Any] = field(default_factory=lambda: {"format": {"type": "text"}})
    reasoning: dict[str, Any] | None = None
    metadata: dict[str, str] = field(default_factory=lambda: {})
    truncation: str = "disabled"
    user: str | None = None
    safety_identifier: str | None = None
    background: bool = False


def _wrong(param: str, expected: str) -> OpenAIError:
    return invalid_request(f"Invalid type for '{param}': expected {expected}.", param=param, code="invalid_type")


def _optional(body: dict[str, Any], key: str, kind: type | tuple[type, ...], expected: str) -> Any:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise _wrong(key, expected)
    return value


def parse_request(body: Any, default_model: str | None = None) -> ResponsesRequest:
    """``body`` checked and normalized; raise a 400 naming the ``param`` for what OpenAI would refuse."""
    if not isinstance(body, dict):
        raise invalid_request("The request body must be a JSON object.", code="invalid_json")
    payload = cast("dict[str, Any]", body)
    model = payload.get("model") or default_model
    if model is None:
        raise invalid_request("Missing required parameter: 'model'.", param="model", code="missing_required_parameter")
    if not isinstance(model, str):
        raise _wrong("model", "a string")
    if "input" not in payload or payload["input"] is None:
        raise invalid_request("Missing required parameter: 'input'.", param="input", code="missing_required_parameter")
    request = ResponsesRequest(model=model, items=input_items(payload["input"]))
    for key in ("stream", "store", "parallel_tool_calls", "background"):
        value = _optional(payload, key, bool, "a boolean")
        if value is not None:
            setattr(request, key, value)
    request.instructions = _optional(payload, "instructions", str, "a string")
    request.previous_response_id = _optional(payload, "previous_response_id", str, "a string")
    request.user = _optional(payload, "user", str, "a string")
    request.safety_identifier = _optional(payload, "safety_identifier", str, "a string")
    request.max_output_tokens = _optional(payload, "max_output_tokens", int, "an integer")
    if request.max_output_tokens is not None and request.max_output_tokens < 1:
        raise invalid_request("Invalid 'max_output_tokens': must be at least 1.", param="max_output_tokens", code="integer_below_min_value")
    request.temperature = _number(payload, "temperature", 0.0, 2.0)
    request.top_p = _number(payload, "top_p", 0.0, 1.0)
    metadata = _optional(payload, "metadata", dict, "an object")
    if metadata is not None:
        if len(metadata) > 16 or not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise invalid_request("Invalid 'metadata': at most 16 string keys with string values.", param="metadata", code="invalid_value")
        request.metadata = metadata
    truncation = payload.get("truncation")
    if truncation is not None:
        if truncation not in ("auto", "disabled"):
            raise invalid_request("Invalid 'truncation': expected 'auto' or 'disabled'.", param="truncation", code="invalid_value")
        request.truncation = truncation
    request.tools = _tools(payload.get("tools"), model)
    request.tool_choice = _tool_choice(payload.get("tool_choice"))
    text = _optional(payload, "text", dict, "an object")
    if text is not None:
        request.text = {**text, "format": _text_format(text.get("format"))}
    reasoning = _optional(payload, "reasoning", dict, "an object")
    if reasoning is not None:
        effort = reasoning.get("effort")
        if effort is not None and effort not in _EFFORTS:
            raise invalid_request(f"Invalid 'reasoning.effort': {effort!r}.", param="reasoning.effort", code="invalid_value")
        request.reasoning = {"effort": effort, "summary": reasoning.get("summary")}
    _optional(payload, "include", list, "an array")
    return request


def _number(body: dict[str, Any], key: str, low: float, high: float) -> float | None:
    value = _optional(body, key, (int, float), "a number")
    if value is not None and not low <= value <= high:
        raise invalid_request(f"Invalid '{key}': must be between {low:g} and {high:g}.", param=key, code="invalid_value")
    return value


# -------------------------------------------------------------------------- input items


def input_items(value: Any) -> list[dict[str, Any]]:
    """The request's ``input`` as a list of items, each with its ``id`` (what ``input_items`` lists)."""
    if isinstance(value, str):
        return [_message_item("user", [{"type": "input_text", "text": value}])]
    if not isinstance(value, list):
        raise _wrong("input", "a string or an array of input items")
    items: list[dict[str, Any]] = []
    for position, raw in enumerate(cast("list[Any]", value)):
        param = f"input[{position}]"
        if not isinstance(raw, dict):
            raise _wrong(param, "an object")
        items.append(_input_item(cast("dict[str, Any]", raw), param))
    return items


def _message_item(role: str, content: list[dict[str, Any]], item_id: str | None = None) -> dict[str, Any]:
    return {"id": item_id or new_item_id("msg"), "type": "message", "role": role, "content": content, "status": "completed"}


def _input_item(item: dict[str, Any], param: str) -> dict[str, Any]:
    kind = item.get("type", "message" if "role" in item else None)
    if kind == "message":
        role = item.get("role")
        if role not in _ROLES:
            raise invalid_request(f"Invalid '{param}.role': expected one of user, system, developer, assistant.", param=f"{param}.role", code="invalid_value")
        return _message_item(role, _content_parts(item.get("content"), role, f"{param}.content"), item.get("id"))
    if kind == "function_call":
        for key in ("call_id", "name", "arguments"):
            if not isinstance(item.get(key), str):
                raise _wrong(f"{param}.{key}", "a string")
        return {
            "id": item.get("id") or new_item_id("fc"),
            "type": "function_call",
            "call_id": item["call_id"],
            "name": item["name"],
            "arguments": item["arguments"],
            "status": "completed",
        }
    if kind == "function_call_output":
        if not isinstance(item.get("call_id"), str):
            raise _wrong(f"{param}.call_id", "a string")
        output = item.get("output")
        if not isinstance(output, (str, list)):
            raise _wrong(f"{param}.output", "a string or an array of content parts")
        return {"id": item.get("id") or new_item_id("fco"), "type": "function_call_output", "call_id": item["call_id"], "output": output, "status": "completed"}
    if kind == "reasoning":
        # A chat upstream has nowhere to take it back: kept for the record, dropped from the chat body.
        reasoning = {"id": item.get("id") or new_item_id("rs"), "type": "reasoning", "summary": item.get("summary") or []}
        if item.get("content") is not None:  # an array when present: the schema has no null here
            reasoning["content"] = item["content"]
        return reasoning
    raise invalid_request(f"Input items of type {kind!r} are not supported in proxy mode.", param=f"{param}.type", code="unsupported_value")


def _content_parts(content: Any, role: str, param: str) -> list[dict[str, Any]]:
    text_type = "output_text" if role == "assistant" else "input_text"
    if isinstance(content, str):
        part: dict[str, Any] = {"type": text_type, "text": content}
        if role == "assistant":
            part["annotations"] = []
            part["logprobs"] = []
        return [part]
    if not isinstance(content, list):
        raise _wrong(param, "a string or an array of content parts")
    parts: list[dict[str, Any]] = []
    for position, raw in enumerate(cast("list[Any]", content)):
        where = f"{param}[{position}]"
        if not isinstance(raw, dict):
            raise _wrong(where, "an object")
        part = cast("dict[str, Any]", raw)
        kind = part.get("type")
        if kind in ("input_text", "output_text", "refusal"):
            key = "refusal" if kind == "refusal" else "text"
            if not isinstance(part.get(key), str):
                raise _wrong(f"{where}.{key}", "a string")
        elif kind == "input_image":
            if not isinstance(part.get("image_url"), str):
                raise invalid_request(f"'{where}': only images given by 'image_url' are supported in proxy mode.", param=f"{where}.image_url")
        else:
            raise invalid_request(f"Content parts of type {kind!r} are not supported in proxy mode.", param=f"{where}.type", code="unsupported_value")
        if kind == "output_text":
            # Listed back as an output message's part, whose annotations and logprobs the schema requires.
            part = {**part, "annotations": part.get("annotations") or [], "logprobs": part.get("logprobs") or []}
        parts.append(part)
    return parts


# -------------------------------------------------------------------------- to chat


def chat_payload(request: ResponsesRequest, history: list[dict[str, Any]]) -> dict[str, Any]:
    """The Chat Completions body for ``request``, after the ``history`` items (a previous response's input and output)."""
    messages: list[dict[str, Any]] = []
    if request.instructions:
        messages.append({"role": "system", "content": request.instructions})
    for item in (*history, *request.items):
        _append_message(messages, item)
    body: dict[str, Any] = {"model": request.model, "messages": messages, "stream": request.stream}
    if request.tools:
        body["tools"] = [_chat_tool(tool) for tool in request.tools]
        body["tool_choice"] = _chat_tool_choice(request.tool_choice)
        body["parallel_tool_calls"] = request.parallel_tool_calls
    elif request.tool_choice == "none":
        body["tool_choice"] = "none"
    if request.max_output_tokens is not None:
        body["max_tokens"] = request.max_output_tokens
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.top_p is not None:
        body["top_p"] = request.top_p
    response_format = _chat_response_format(request.text["format"])
    if response_format is not None:
        body["response_format"] = response_format
    if request.reasoning is not None and request.reasoning.get("effort") is not None:
        body["reasoning_effort"] = request.reasoning["effort"]
    user = request.safety_identifier or request.user
    if user is not None:
        body["user"] = user
    return body


def _text_of(parts: Any) -> str:
    if isinstance(parts, str):
        return parts
    return "".join(p.get("text") or p.get("refusal") or "" for p in cast("list[dict[str, Any]]", parts) if isinstance(p, dict))


def _append_message(messages: list[dict[str, Any]], item: dict[str, Any]) -> None:
    kind = item["type"]
    if kind == "message":
        role = item["role"]
        parts: list[dict[str, Any]] = item["content"]
        if any(p.get("type") == "input_image" for p in parts):
            content: Any = [
                {"type": "image_url", "image_url": {"url": p["image_url"], "detail": p.get("detail") or "auto"}}
                if p["type"] == "input_image"
                else {"type": "text", "text": p.get("text") or ""}
                for p in parts
            ]
        else:
            # Plain text where the parts are all text: llama.cpp and older servers take only strings for system and assistant.
            content = _text_of(parts)
        messages.append({"role": "system" if role == "developer" else role, "content": content})
    elif kind == "function_call":
        call = {"id": item["call_id"], "type": "function", "function": {"name": item["name"], "arguments": item["arguments"]}}
        last = messages[-1] if messages else None
        # Parallel calls are one assistant turn in chat; so is the text said before them.
        if last is not None and last["role"] == "assistant":
            last.setdefault("tool_calls", []).append(call)
        else:
            messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
    elif kind == "function_call_output":
        messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": _text_of(item["output"])})
    # Reasoning items: a chat upstream takes none back.


# Hosted tools toolrelay's agent mode runs as built-ins (docs/responses.md).
_AGENT_HOSTED = frozenset({"web_search", "web_search_preview", "web_search_preview_2025_03_11", "code_interpreter"})


def hosted_tool_refusal(kind: Any, model: str, param: str) -> OpenAIError:
    """The 400 for a hosted tool on a model reached through Chat Completions, which has nowhere to run it."""
    if kind in _AGENT_HOSTED:
        hint = f"use the agent model 'agent/{model}' (or 'agent:{model}'), where toolrelay runs it as a built-in tool"
    else:
        hint = 'only an upstream that speaks the Responses API natively (responses_api = "native") can run it'
    return invalid_request(
        f"Tools of type {kind!r} cannot run for '{model}': its upstream is reached through Chat Completions, which has no hosted tools; {hint}.",
        param=f"{param}.type",
        code="unsupported_value",
    )


def _tools(value: Any, model: str) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _wrong("tools", "an array")
    tools: list[dict[str, Any]] = []
    for position, raw in enumerate(cast("list[Any]", value)):
        param = f"tools[{position}]"
        if not isinstance(raw, dict):
            raise _wrong(param, "an object")
        tool = cast("dict[str, Any]", raw)
        kind = tool.get("type")
        if kind != "function":
            raise hosted_tool_refusal(kind, model, param)
        if not isinstance(tool.get("name"), str) or not tool["name"]:
            raise invalid_request(f"Missing required parameter: '{param}.name'.", param=f"{param}.name", code="missing_required_parameter")
        parameters = tool.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            raise _wrong(f"{param}.parameters", "an object")
        description = tool.get("description")
        if description is not None and not isinstance(description, str):
            raise _wrong(f"{param}.description", "a string")
        strict = tool.get("strict")
        tools.append({"type": "function", "name": tool["name"], "description": description, "parameters": parameters, "strict": strict is not False})
    return tools


def _chat_tool(tool: dict[str, Any]) -> dict[str, Any]:
    function: dict[str, Any] = {"name": tool["name"], "parameters": tool["parameters"] or {"type": "object", "properties": {}}}
    if tool["description"] is not None:
        function["description"] = tool["description"]
    if tool["strict"]:
        function["strict"] = True
    return {"type": "function", "function": function}


def _tool_choice(value: Any) -> Any:
    if value is None:
        return "auto"
    if value in ("auto", "none", "required"):
        return value
    if isinstance(value, dict):
        choice = cast("dict[str, Any]", value)
        if choice.get("type") == "function" and isinstance(choice.get("name"), str):
            return {"type": "function", "name": choice["name"]}
    raise invalid_request(
        "Invalid 'tool_choice': expected 'auto', 'none', 'required' or {'type': 'function', 'name': ...}.", param="tool_choice", code="invalid_value"
    )


def _chat_tool_choice(choice: Any) -> Any:
    if isinstance(choice, dict):
        return {"type": "function", "function": {"name": cast("dict[str, Any]", choice)["name"]}}
    return choice


def _text_format(value: Any) -> dict[str, Any]:
    if value is None:
        return {"type": "text"}
    if not isinstance(value, dict):
        raise _wrong("text.format", "an object")
    fmt = cast("dict[str, Any]", value)
    kind = fmt.get("type")
    if kind in ("text", "json_object"):
        return {"type": kind}
    if kind == "json_schema":
        if not isinstance(fmt.get("name"), str):
            raise invalid_request("Missing required parameter: 'text.format.name'.", param="text.format.name", code="missing_required_parameter")
        if not isinstance(fmt.get("schema"), dict):
            raise invalid_request("Missing required parameter: 'text.format.schema'.", param="text.format.schema", code="missing_required_parameter")
        out = {"type": "json_schema", "name": fmt["name"], "schema": fmt["schema"], "strict": fmt.get("strict") is True}
        if isinstance(fmt.get("description"), str):
            out["description"] = fmt["description"]
        return out
    raise invalid_request("Invalid 'text.format.type': expected 'text', 'json_object' or 'json_schema'.", param="text.format.type", code="invalid_value")


def _chat_response_format(fmt: dict[str, Any]) -> dict[str, Any] | None:
    kind = fmt["type"]
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    schema = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
    return {"type": "json_schema", "json_schema": schema}


# -------------------------------------------------------------------------- from chat


def message_item(text: str, status: str = "completed", item_id: str | None = None) -> dict[str, Any]:
    """An assistant ``message`` output item holding one ``output_text`` part."""
    return {
        "id": item_id or new_item_id("msg"),
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
    }


def refusal_item(refusal: str, status: str = "completed", item_id: str | None = None) -> dict[str, Any]:
    """An assistant ``message`` output item holding one ``refusal`` part (chat's ``message.refusal``)."""
    return {"id": item_id or new_item_id("msg"), "type": "message", "role": "assistant", "status": status, "content": [{"type": "refusal", "refusal": refusal}]}


def function_call_item(call_id: str, name: str, arguments: str, status: str = "completed", item_id: str | None = None) -> dict[str, Any]:
    return {"id": item_id or new_item_id("fc"), "type": "function_call", "call_id": call_id, "name": name, "arguments": arguments, "status": status}


def reasoning_item(text: str, status: str = "completed", item_id: str | None = None) -> dict[str, Any]:
    """Chat upstreams' ``reasoning_content`` as a ``reasoning`` item's ``reasoning_text`` (no summary: none was made)."""
    return {"id": item_id or new_item_id("rs"), "type": "reasoning", "summary": [], "content": [{"type": "reasoning_text", "text": text}], "status": status}


def output_items(message: dict[str, Any], finish_reason: str | None) -> list[dict[str, Any]]:
    """A merged chat message (``ChoiceAccumulator.merged_message``) as ``output`` items: reasoning, text, calls."""
    status = "incomplete" if finish_reason == "length" else "completed"
    items: list[dict[str, Any]] = []
    reasoning = message.get("reasoning_content")
    if isinstance(reasoning, str) and reasoning:
        items.append(reasoning_item(reasoning))
    content = message.get("content")
    if isinstance(content, str) and content:
        items.append(message_item(content, status))
    refusal = message.get("refusal")
    if isinstance(refusal, str) and refusal:
        items.append(refusal_item(refusal, status))
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        items.append(function_call_item(call.get("id") or "", function.get("name") or "", function.get("arguments") or ""))
    return items


def responses_usage(usage: dict[str, Any] | None) -> dict[str, Any] | None:
    """Chat usage as Responses usage: prompt/completion tokens become input/output tokens."""
    if usage is None:
        return None
    prompt = int(usage.get("prompt_tokens") or 0)
    completion = int(usage.get("completion_tokens") or 0)
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    reasoning = (usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": int(cached), "cache_write_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": int(reasoning)},
        "total_tokens": int(usage.get("total_tokens") or prompt + completion),
    }


def response_object(
    request: ResponsesRequest,
    *,
    response_id: str,
    created_at: int,
    status: str,
    output: list[dict[str, Any]],
    usage: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``Response`` object: the answer so far plus the echo of the request's settings."""
    incomplete = {"reason": "max_output_tokens"} if status == "incomplete" else None
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "completed_at": int(time.time()) if status == "completed" else None,
        "error": error,
        "incomplete_details": incomplete,
        "instructions": request.instructions,
        "max_output_tokens": request.max_output_tokens,
        "model": request.model,
        "output": output,
        "parallel_tool_calls": request.parallel_tool_calls,
        "previous_response_id": request.previous_response_id,
        "reasoning": request.reasoning or {"effort": None, "summary": None},
        "store": request.store,
        "temperature": request.temperature if request.temperature is not None else 1.0,
        "text": request.text,
        "tool_choice": request.tool_choice,
        "tools": request.tools,
        "top_p": request.top_p if request.top_p is not None else 1.0,
        "truncation": request.truncation,
        "usage": usage,
        "user": request.user,
        "safety_identifier": request.safety_identifier,
        "metadata": request.metadata,
        "background": request.background,
    }
