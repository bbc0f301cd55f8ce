"""Chat Completions requests written as Anthropic Messages requests.

Pure code (no I/O): :func:`messages_request` turns a chat body (already
validated by :mod:`toolrelay.app.validation`) into the body of
``POST /v1/messages``; what cannot be said in the Messages API is refused
with a 400 naming the parameter, never dropped in a way that changes the
answer. Mappings (docs/upstreams.md lists them for users):

- ``system``/``developer`` messages, wherever they stand, become the
  top-level ``system`` (a string for one text, text blocks otherwise): the
  Messages API has no system role.
- user parts: ``text``; ``image_url`` with a ``data:`` URL becomes a base64
  image block, an ``http(s)`` URL a ``url`` image source.
- assistant ``tool_calls`` become ``tool_use`` blocks (the arguments parsed:
  a call whose arguments are not a JSON object is sent with ``{}``, as the
  API requires an object); ``tool`` messages become ``tool_result`` blocks
  of a user turn. Consecutive messages of one role are merged into one turn,
  because the API wants user and assistant turns to alternate (parallel tool
  results arrive as several ``tool`` messages).
- ``tools`` -> ``{name, description, input_schema}``; ``tool_choice``
  ``auto``/``none``/``required``/a function -> ``auto``/``none``/``any``/
  ``tool``; ``parallel_tool_calls: false`` -> ``disable_parallel_tool_use``.
- ``max_completion_tokens``/``max_tokens`` -> ``max_tokens``, which the API
  requires: absent, the upstream's ``default_max_tokens``.
- ``temperature`` is clamped to Anthropic's 0..1; ``stop`` ->
  ``stop_sequences``; ``user`` -> ``metadata.user_id``.
- ``reasoning_effort`` -> extended thinking with a budget
  (:data:`THINKING_BUDGETS`); ``max_tokens`` covers thinking too, as
  ``max_completion_tokens`` covers reasoning at OpenAI.
- ``response_format`` ``json_schema``/``json_object`` -> a forced tool
  (:data:`JSON_TOOL`) whose input is the answer; the reply reader turns that
  tool's input back into ``content``.
"""

from __future__ import annotations

from typing import Any

import orjson

from toolrelay.app.errors import OpenAIError, invalid_request

__all__ = ["JSON_TOOL", "THINKING_BUDGETS", "messages_request"]

#: Name of the tool that carries a ``response_format`` answer (Messages has no JSON mode).
JSON_TOOL = "json_response"

#: Thinking budget (tokens) per ``reasoning_effort``; the API's floor is 1024.
THINKING_BUDGETS = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 16384}
_MIN_THINKING_BUDGET = 1024

_TOOL_CHOICE = {"auto": "auto", "none": "none", "required": "any"}
# Chat parameters with no Messages counterpart that would change the answer if ignored.
_REFUSED = ("logprobs", "top_logprobs", "audio", "prediction")


def _unsupported(param: str, detail: str) -> OpenAIError:
    return invalid_request(f"Anthropic upstreams do not support {detail}.", param=param, code="unsupported_parameter")


def messages_request(body: dict[str, Any], *, default_max_tokens: int) -> dict[str, Any]:
    """The Messages body for the chat ``body``; raises :class:`OpenAIError` (400) for what has no translation."""
    for param in _REFUSED:
        if body.get(param) not in (None, False):
            raise _unsupported(param, f"`{param}`")
    n = body.get("n")
    if n is not None and n != 1:
        raise _unsupported("n", "more than one choice (`n`)")
    system, messages = _messages(body.get("messages") or [])
    out: dict[str, Any] = {"model": body["model"], "messages": messages}
    if system:
        out["system"] = system[0]["text"] if len(system) == 1 else system
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    out["max_tokens"] = max_tokens or default_max_tokens
    _sampling(body, out)
    _tools(body, out)
    _thinking(body, out, explicit_max=max_tokens is not None)
    user = body.get("user")
    if isinstance(user, str) and user:
        out["metadata"] = {"user_id": user}
    if body.get("stream"):
        out["stream"] = True
    return out


# -- messages ------------------------------------------------------------------


def _messages(source: list[Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for position, message in enumerate(source):
        role = message.get("role")
        if role in ("system", "developer"):
            system.extend(_text_blocks(message.get("content"), f"messages[{position}].content"))
            continue
        if role == "user":
            blocks = _user_blocks(message.get("content"), position)
            turn_role = "user"
        elif role == "assistant":
            blocks = _assistant_blocks(message, position)
            turn_role = "assistant"
        elif role == "tool":
            blocks = [_tool_result(message, position)]
            turn_role = "user"
        else:
            raise _unsupported(f"messages[{position}].role", f"the `{role}` role")
        if not blocks:
            continue
        if turns and turns[-1]["role"] == turn_role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": turn_role, "content": blocks})
    for turn in turns:
        # One text block is sent as the plain string the API also takes (smaller, and what Anthropic's own examples send).
        content = turn["content"]
        if len(content) == 1 and content[0]["type"] == "text":
            turn["content"] = content[0]["text"]
    return system, turns


def _text_blocks(content: Any, param: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for part in content or ():
        if part.get("type") == "text":
            if part.get("text"):
                blocks.append({"type": "text", "text": part["text"]})
        elif part.get("type") == "refusal":
            if part.get("refusal"):
                blocks.append({"type": "text", "text": part["refusal"]})
        else:
            raise _unsupported(param, f"`{part.get('type')}` parts here")
    return blocks


def _user_blocks(content: Any, position: int) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    blocks: list[dict[str, Any]] = []
    for index, part in enumerate(content or ()):
        kind = part.get("type")
        if kind == "text":
            if part.get("text"):
                blocks.append({"type": "text", "text": part["text"]})
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            blocks.append(_image_block(url, f"messages[{position}].content[{index}].image_url"))
        else:
            raise _unsupported(f"messages[{position}].content[{index}].type", f"`{kind}` content parts")
    return blocks


def _image_block(url: Any, param: str) -> dict[str, Any]:
    if not isinstance(url, str):
        raise invalid_request("An image part needs a URL.", param=param)
    if url.startswith("data:"):
        header, comma, data = url[5:].partition(",")
        media_type, _, encoding = header.partition(";")
        if not comma or encoding != "base64" or not media_type.startswith("image/"):
            raise invalid_request("An image data URL must be `data:image/<type>;base64,<data>`.", param=param)
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    if url.startswith(("https://", "http://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise invalid_request("An image URL must be an http(s) or data: URL.", param=param)


def _assistant_blocks(message: dict[str, Any], position: int) -> list[dict[str, Any]]:
    # reasoning_content is not sent back: Anthropic accepts earlier thinking only with its
    # signature, which Chat Completions has no place for.
    blocks = _text_blocks(message.get("content"), f"messages[{position}].content")
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        blocks.append({"type": "tool_use", "id": call.get("id") or "", "name": function.get("name") or "", "input": _arguments(function.get("arguments"))})
    return blocks


def _arguments(arguments: Any) -> dict[str, Any]:
    if isinstance(arguments, dict):
        return arguments
    try:
        parsed = orjson.loads(arguments or "{}")
    except (orjson.JSONDecodeError, TypeError):
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _tool_result(message: dict[str, Any], position: int) -> dict[str, Any]:
    content = message.get("content")
    result: dict[str, Any] = {"type": "tool_result", "tool_use_id": message.get("tool_call_id") or ""}
    if isinstance(content, str):
        result["content"] = content
    else:
        result["content"] = _text_blocks(content, f"messages[{position}].content")
    return result


# -- sampling, tools, thinking ---------------------------------------------------------------


def _sampling(body: dict[str, Any], out: dict[str, Any]) -> None:
    temperature = body.get("temperature")
    if temperature is not None:
        out["temperature"] = min(float(temperature), 1.0)
    if body.get("top_p") is not None:
        out["top_p"] = body["top_p"]
    stop = body.get("stop")
    if isinstance(stop, str):
        out["stop_sequences"] = [stop]
    elif stop:
        out["stop_sequences"] = list(stop)


def _tools(body: dict[str, Any], out: dict[str, Any]) -> None:
    tools: list[dict[str, Any]] = []
    for index, tool in enumerate(body.get("tools") or ()):
        if tool.get("type", "function") != "function":
            raise _unsupported(f"tools[{index}].type", f"`{tool.get('type')}` tools")
        function = tool.get("function") or {}
        entry: dict[str, Any] = {"name": function.get("name"), "input_schema": function.get("parameters") or {"type": "object", "properties": {}}}
        if function.get("description"):
            entry["description"] = function["description"]
        tools.append(entry)
    choice = _tool_choice(body.get("tool_choice"))
    json_schema = _json_schema(body.get("response_format"))
    if json_schema is not None:
        tools.append({"name": JSON_TOOL, "description": "Give the answer as this tool's input.", "input_schema": json_schema})
        # With the client's tools on offer the model may still call them ("any"); otherwise it must answer.
        client_tools = len(tools) > 1 and (choice or {}).get("type") != "none"
        choice = {"type": "any"} if client_tools else {"type": "tool", "name": JSON_TOOL}
    if not tools:
        return
    out["tools"] = tools
    if body.get("parallel_tool_calls") is False and (choice or {}).get("type") != "none":
        choice = {**(choice or {"type": "auto"}), "disable_parallel_tool_use": True}
    if choice is not None:
        out["tool_choice"] = choice


def _tool_choice(choice: Any) -> dict[str, Any] | None:
    if choice is None:
        return None
    if isinstance(choice, str):
        if choice not in _TOOL_CHOICE:
            raise invalid_request(f"Unknown tool_choice `{choice}`.", param="tool_choice")
        return {"type": _TOOL_CHOICE[choice]}
    name = (choice.get("function") or {}).get("name") if isinstance(choice, dict) else None
    if not name:
        raise _unsupported("tool_choice", "this `tool_choice`")
    return {"type": "tool", "name": name}


def _json_schema(response_format: Any) -> dict[str, Any] | None:
    if not isinstance(response_format, dict):
        return None
    kind = response_format.get("type")
    if kind == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        return schema if isinstance(schema, dict) and schema else {"type": "object"}
    if kind == "json_object":
        return {"type": "object"}
    return None


def _thinking(body: dict[str, Any], out: dict[str, Any], *, explicit_max: bool) -> None:
    effort = body.get("reasoning_effort")
    if effort is None or effort == "none":
        return
    budget = THINKING_BUDGETS.get(effort)
    if budget is None:
        raise invalid_request(f"Unknown reasoning_effort `{effort}`.", param="reasoning_effort")
    if explicit_max:
        # The client's cap covers thinking and answer, as max_completion_tokens does at OpenAI.
        budget = min(budget, out["max_tokens"] - 1)
        if budget < _MIN_THINKING_BUDGET:
            raise invalid_request(
                f"reasoning_effort needs max_tokens above {_MIN_THINKING_BUDGET} on Anthropic models (thinking budgets start there).",
                param="max_tokens",
            )
    else:
        out["max_tokens"] += budget
    out["thinking"] = {"type": "enabled", "budget_tokens": budget}
    # Thinking requires the default temperature (Anthropic refuses any other).
    out.pop("temperature", None)
