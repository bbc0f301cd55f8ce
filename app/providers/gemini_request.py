"""Chat Completions requests as Gemini ``generateContent`` requests: pure translation.

No I/O: :mod:`toolrelay.app.providers.gemini` sends what this builds. What a
Chat Completions body means in the Generative Language API:

- ``system``/``developer`` messages become ``systemInstruction`` (all of
  them, in order: Gemini has one system instruction per request);
- the other messages become ``contents`` with roles ``user``/``model``,
  consecutive contents of one role merged (Gemini wants turns to alternate);
- image parts: ``data:`` URLs become ``inlineData``, http(s) URLs
  ``fileData`` with a MIME type guessed from the path (Gemini fetches them);
- assistant ``tool_calls`` become ``functionCall`` parts and ``tool``
  messages ``functionResponse`` parts, named through the ``tool_call_id`` of
  the call they answer (Gemini has no call ids);
- a call's ``thoughtSignature`` (Gemini 3 refuses a replayed function call
  without it) travels inside the call id we minted for it
  (:func:`split_call_id`), so clients that send the conversation back
  unchanged send it back too, with no state kept here;
- ``tools`` become ``functionDeclarations`` with the JSON Schema given as
  ``parametersJsonSchema`` (full JSON Schema, not the OpenAPI subset of
  ``parameters``), ``tool_choice`` becomes ``toolConfig``;
- sampling fields, ``response_format`` and ``reasoning_effort`` become
  ``generationConfig`` (table in docs/upstreams.md);
- ``logprobs``, ``logit_bias``, ``audio``, ``prediction`` would change the
  answer and have no counterpart here: a 400 ``unsupported_parameter``, as
  for Anthropic upstreams; fields that only tune OpenAI's billing or storage
  (``store``, ``metadata``, ``service_tier``, ``user``) are not sent.
"""

from __future__ import annotations

import mimetypes
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson

from toolrelay.app.errors import OpenAIError, invalid_request

__all__ = [
    "REASONING_BUDGETS",
    "THOUGHT_SEPARATOR",
    "GeminiRequest",
    "join_call_id",
    "model_path",
    "split_call_id",
    "to_gemini",
]

#: Between a minted call id and the Gemini ``thoughtSignature`` carried inside it.
THOUGHT_SEPARATOR = "__thought__"

#: ``reasoning_effort`` -> ``thinkingConfig.thinkingBudget`` (tokens). 128 is the
#: smallest budget Gemini 2.5 Pro accepts (it cannot turn thinking off); 0 turns it off on Flash.
REASONING_BUDGETS: dict[str, int] = {"none": 0, "minimal": 128, "low": 1024, "medium": 8192, "high": 24576}

# Fields with no Gemini counterpart that would change the answer: refused rather than dropped.
_REFUSED = ("logprobs", "top_logprobs", "logit_bias", "audio", "prediction")
_TOOL_CHOICE_MODES = {"auto": "AUTO", "none": "NONE", "required": "ANY"}
# Gemini model resource names: "models/<id>" or "tunedModels/<id>"; anything else could walk the URL path.
_MODEL_NAME = re.compile(r"^(?:(?:models|tunedModels)/)?[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)(?:;[^,;]*)*;base64,(?P<data>.*)$", re.DOTALL)
_AUDIO_MIME = {"wav": "audio/wav", "mp3": "audio/mp3"}


@dataclass(slots=True)
class GeminiRequest:
    """The translated request: the model's resource path (``models/<id>``) and the JSON body."""

    model: str
    body: dict[str, Any]


def model_path(model: str) -> str:
    """``models/<id>`` for a model name; 404 for names that are not Gemini resource names."""
    if not _MODEL_NAME.match(model):
        raise OpenAIError(404, f"The model `{model}` is not a Gemini model name.", param="model", code="model_not_found")
    return model if "/" in model else "models/" + model


def join_call_id(call_id: str, signature: str | None) -> str:
    """The id a client sees for a Gemini function call: ours, plus its thought signature if it had one."""
    return f"{call_id}{THOUGHT_SEPARATOR}{signature}" if signature else call_id


def split_call_id(call_id: str) -> tuple[str, str | None]:
    """(plain id, thought signature or None) of an id made by :func:`join_call_id`."""
    plain, sep, signature = call_id.partition(THOUGHT_SEPARATOR)
    return (plain, signature) if sep and signature else (call_id, None)


def to_gemini(body: dict[str, Any]) -> GeminiRequest:
    """Translate a Chat Completions body; raises the 400 for what Gemini cannot be asked."""
    for param in _REFUSED:
        if body.get(param) not in (None, False):
            raise invalid_request(f"Gemini upstreams do not support `{param}`.", param=param, code="unsupported_parameter")
    if "audio" in (body.get("modalities") or ()):
        raise invalid_request("Gemini upstreams do not answer with audio here.", param="modalities", code="unsupported_parameter")
    model = model_path(str(body.get("model") or ""))
    system, contents = _contents(body.get("messages") or [])
    out: dict[str, Any] = {"contents": contents}
    if system:
        out["systemInstruction"] = {"parts": system}
    tools = body.get("tools")
    if tools:
        out["tools"] = [{"functionDeclarations": [_declaration(tool, i) for i, tool in enumerate(tools)]}]
    tool_config = _tool_config(body.get("tool_choice"))
    if tool_config is not None:
        out["toolConfig"] = tool_config
    config = _generation_config(body)
    if config:
        out["generationConfig"] = config
    return GeminiRequest(model, out)


# --------------------------------------------------------------------------- messages


def _text_of(content: Any, param: str) -> list[dict[str, Any]]:
    """Text parts of a system/developer/assistant/tool content (a string or text parts)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}] if content else []
    parts: list[dict[str, Any]] = []
    for i, part in enumerate(content):
        if isinstance(part, dict) and part.get("type") in ("text", "refusal"):
            text = part.get("text") if part.get("type") == "text" else part.get("refusal")
            if isinstance(text, str) and text:
                parts.append({"text": text})
        else:
            raise invalid_request(
                f"Only text parts can be sent to a Gemini model here, got {part.get('type') if isinstance(part, dict) else part!r}.", f"{param}[{i}]"
            )
    return parts


def _image_part(url: str, param: str) -> dict[str, Any]:
    found = _DATA_URL.match(url)
    if found:
        return {"inlineData": {"mimeType": found["mime"], "data": found["data"]}}
    if url.startswith("data:"):
        raise invalid_request("An image data URL must be base64: data:<mime type>;base64,<data>.", param)
    scheme = urlsplit(url).scheme.lower()
    if scheme not in ("http", "https", "gs"):
        raise invalid_request("An image URL must be a data: URL or an http(s) URL.", param)
    mime = mimetypes.guess_type(urlsplit(url).path)[0]
    return {"fileData": {"fileUri": url, "mimeType": mime if mime and mime.startswith(("image/", "video/", "application/pdf")) else "image/jpeg"}}


def _user_parts(content: Any, param: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"text": content}] if content else []
    parts: list[dict[str, Any]] = []
    for i, part in enumerate(content or ()):
        where = f"{param}[{i}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if part.get("text"):
                parts.append({"text": part["text"]})
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if not isinstance(url, str):
                raise invalid_request("image_url.url must be a string.", where)
            parts.append(_image_part(url, where))
        elif kind == "input_audio":
            audio = part.get("input_audio") or {}
            mime = _AUDIO_MIME.get(str(audio.get("format")), "")
            if not mime or not isinstance(audio.get("data"), str):
                raise invalid_request("input_audio needs base64 data and format wav or mp3.", where)
            parts.append({"inlineData": {"mimeType": mime, "data": audio["data"]}})
        elif kind == "file":
            file = part.get("file") or {}
            data = file.get("file_data")
            found = _DATA_URL.match(data) if isinstance(data, str) else None
            if found is None:
                raise invalid_request("A file part for a Gemini model needs file_data as a base64 data: URL (file ids are OpenAI's).", where)
            parts.append({"inlineData": {"mimeType": found["mime"], "data": found["data"]}})
        else:
            raise invalid_request(f"Content part type {kind!r} cannot be sent to a Gemini model.", where)
    return parts


def _call_parts(calls: Any, param: str, names: dict[str, str]) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for i, call in enumerate(calls or ()):
        where = f"{param}.tool_calls[{i}]"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise invalid_request("A tool call needs function.name.", where)
        raw = function.get("arguments") or "{}"
        try:
            args = orjson.loads(raw) if isinstance(raw, str) else raw
        except orjson.JSONDecodeError:
            raise invalid_request("Tool call arguments must be a JSON object for a Gemini model.", f"{where}.function.arguments") from None
        if not isinstance(args, dict):
            raise invalid_request("Tool call arguments must be a JSON object for a Gemini model.", f"{where}.function.arguments")
        call_id = call.get("id")
        part: dict[str, Any] = {"functionCall": {"name": function["name"], "args": args}}
        if isinstance(call_id, str):
            names[call_id] = function["name"]
            signature = split_call_id(call_id)[1]
            if signature:
                part["thoughtSignature"] = signature
        parts.append(part)
    return parts


def _function_response(message: dict[str, Any], param: str, names: dict[str, str]) -> dict[str, Any]:
    call_id = message.get("tool_call_id")
    name = names.get(call_id) if isinstance(call_id, str) else None
    name = name or (message.get("name") if isinstance(message.get("name"), str) else None)
    if not name:
        raise invalid_request(
            "A tool message must answer a tool call of an earlier assistant message (its tool_call_id): Gemini needs the function's name.",
            f"{param}.tool_call_id",
        )
    text = "".join(p["text"] for p in _text_of(message.get("content"), f"{param}.content"))
    response: Any
    try:
        response = orjson.loads(text)
    except orjson.JSONDecodeError:
        response = None
    # Gemini takes an object; its documented convention for anything else is {"output": ...}.
    return {"functionResponse": {"name": name, "response": response if isinstance(response, dict) else {"output": text}}}


def _contents(messages: list[Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # tool_call_id -> function name, from the assistant messages so far
    for i, message in enumerate(messages):
        param = f"messages[{i}]"
        role = message.get("role")
        if role in ("system", "developer"):
            system.extend(_text_of(message.get("content"), f"{param}.content"))
            continue
        if role == "user":
            gemini_role, parts = "user", _user_parts(message.get("content"), f"{param}.content")
        elif role == "assistant":
            gemini_role = "model"
            parts = _text_of(message.get("content"), f"{param}.content") + _call_parts(message.get("tool_calls"), param, names)
        elif role in ("tool", "function"):
            gemini_role, parts = "user", [_function_response(message, param, names)]
        else:
            raise invalid_request(f"Message role {role!r} cannot be sent to a Gemini model.", f"{param}.role")
        if not parts:
            continue
        if contents and contents[-1]["role"] == gemini_role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": gemini_role, "parts": parts})
    return system, contents


# --------------------------------------------------------------------------- tools


def _declaration(tool: Any, i: int) -> dict[str, Any]:
    function = tool.get("function") if isinstance(tool, dict) and tool.get("type", "function") == "function" else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise invalid_request("Only function tools can be offered to a Gemini model.", f"tools[{i}]")
    out: dict[str, Any] = {"name": function["name"]}
    if isinstance(function.get("description"), str):
        out["description"] = function["description"]
    parameters = function.get("parameters")
    if isinstance(parameters, dict) and parameters:
        # $schema names a dialect Gemini does not read; everything else is JSON Schema it accepts.
        out["parametersJsonSchema"] = {k: v for k, v in parameters.items() if k != "$schema"}
    return out


def _tool_config(choice: Any) -> dict[str, Any] | None:
    if choice is None:
        return None
    if isinstance(choice, str):
        mode = _TOOL_CHOICE_MODES.get(choice)
        if mode is None:
            raise invalid_request(f"tool_choice {choice!r} is not one of auto, none, required.", "tool_choice")
        return {"functionCallingConfig": {"mode": mode}}
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = (choice.get("function") or {}).get("name")
        if isinstance(name, str):
            return {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [name]}}
    if isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        allowed = choice.get("allowed_tools") or {}
        names = [t["function"]["name"] for t in allowed.get("tools") or () if isinstance(t, dict) and isinstance((t.get("function") or {}).get("name"), str)]
        mode = "ANY" if allowed.get("mode") == "required" else "AUTO"
        # Gemini takes allowedFunctionNames with ANY only; with AUTO the names cannot be restricted.
        return {"functionCallingConfig": {"mode": mode, "allowedFunctionNames": names} if mode == "ANY" else {"mode": mode}}
    raise invalid_request("tool_choice must be auto, none, required or name a function.", "tool_choice")


# --------------------------------------------------------------------------- generation config


def _generation_config(body: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    if max_tokens:
        config["maxOutputTokens"] = max_tokens
    for ours, theirs in (
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
        ("seed", "seed"),
    ):
        if body.get(ours) is not None:
            config[theirs] = body[ours]
    stop = body.get("stop")
    if stop:
        config["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    n = body.get("n")
    if isinstance(n, int) and n > 1:
        config["candidateCount"] = n
    response_format = body.get("response_format")
    if isinstance(response_format, dict):
        kind = response_format.get("type")
        if kind == "json_object":
            config["responseMimeType"] = "application/json"
        elif kind == "json_schema":
            schema = (response_format.get("json_schema") or {}).get("schema")
            config["responseMimeType"] = "application/json"
            if isinstance(schema, dict):
                config["responseJsonSchema"] = {k: v for k, v in schema.items() if k != "$schema"}
    effort = body.get("reasoning_effort")
    if isinstance(effort, str):
        budget = REASONING_BUDGETS.get(effort)
        if budget is None:
            raise invalid_request(f"reasoning_effort {effort!r} is not one of {', '.join(REASONING_BUDGETS)}.", "reasoning_effort")
        config["thinkingConfig"] = {"thinkingBudget": budget, "includeThoughts": budget > 0}
    return config
