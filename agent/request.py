"""The upstream request of one agent turn: system prompt, tools offered, tool choice, history.

History is kept in OpenAI's native shape (assistant ``tool_calls`` +
``tool`` messages) whatever the model's mode; constrained-mode models get it
rendered as plain chat here, at call time (:func:`render_constrained`), with a
step schema as ``response_format`` in place of ``tools``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from toolrelay.agent.constrained import (
    client_answer_schema,
    instructions,
    step_schema,
    tool_result_message,
)

__all__ = [
    "CLIENT_CALL_PROMPT",
    "FINAL_ANSWER_PROMPT",
    "NATIVE_SYSTEM_PROMPT",
    "RequestBuilder",
    "ToolOffer",
    "render_constrained",
    "upstream_message",
]

# Fields of the client's request that the loop manages itself per model call.
_MANAGED = ("model", "messages", "tools", "tool_choice", "stream", "stream_options", "n", "agent_options", "functions", "function_call")

NATIVE_SYSTEM_PROMPT = (
    "You can call built-in tools ({names}) whenever they help; their results come back to you. "
    "Use them instead of guessing facts you cannot know. When you have what you need, answer the user directly. "
    "If you used web pages, cite their URLs."
)
FINAL_ANSWER_PROMPT = "Stop using tools now. Using the tool results above, write your final answer to the user's request."
CLIENT_CALL_PROMPT = "Stop using the built-in tools now. Call one of the tools listed above, using the results so far."

# Our own extension fields on assistant messages a client echoes back; strict
# upstreams refuse unknown message properties (e.g. "reasoning_content is unsupported").
_OWN_FIELDS = ("agent_steps", "reasoning", "reasoning_content", "annotations")


@dataclass(frozen=True, slots=True)
class ToolOffer:
    """The tools of one run and the client's rules for calling them, decided once per request."""

    #: Built-in tools offered, in the configured order (a client function of the same name wins).
    builtin_names: tuple[str, ...]
    #: The client's ``function`` tools, as sent.
    client_tools: tuple[dict[str, Any], ...]
    client_names: frozenset[str]
    #: The client's ``tool_choice`` ("auto" when absent).
    client_choice: Any
    #: ``parallel_tool_calls`` was not ``false``: more than one client call per turn.
    parallel_client_calls: bool
    #: ``agent_options.tool_choice`` (or a hint): what the first step must call ("required" or a function).
    builtin_choice: Any
    #: tool_choice "required" (or naming one of the client's functions) with client functions:
    #: the answer must call one of these; built-ins may run first (docs/agent.md).
    required_client_names: tuple[str, ...]
    #: Constrained mode: the client's structured-output schema, enforced on each step's answer branch.
    answer_schema: dict[str, Any] | None

    @classmethod
    def for_request(cls, payload: dict[str, Any], builtin_names: list[str] | tuple[str, ...], builtin_choice: Any = None) -> ToolOffer:
        client_tools = tuple(t for t in payload.get("tools") or () if isinstance(t, dict) and t.get("type", "function") == "function")
        client_names = frozenset(t["function"]["name"] for t in client_tools if isinstance(t.get("function"), dict))
        choice = payload.get("tool_choice")
        client_choice = choice if choice is not None else "auto"
        wanted = (client_choice.get("function") or {}).get("name") if isinstance(client_choice, dict) else None
        required = sorted(client_names) if client_choice == "required" else [n for n in client_names if n == wanted]
        return cls(
            builtin_names=tuple(n for n in builtin_names if n not in client_names),
            client_tools=client_tools,
            client_names=client_names,
            client_choice=client_choice,
            parallel_client_calls=payload.get("parallel_tool_calls") is not False,
            builtin_choice=builtin_choice,
            required_client_names=tuple(required),
            answer_schema=client_answer_schema(payload.get("response_format")),
        )

    def classify(self, name: str, final: bool) -> str:
        """``builtin``, ``client``, ``unknown`` (answered with an error result) or ``ignored`` (a final turn's)."""
        if final:
            return "client" if name in self.required_client_names else "ignored"
        if name in self.builtin_names:
            return "builtin"
        if name in self.client_names and self.client_choice != "none":
            return "client"
        return "unknown"


def upstream_message(message: dict[str, Any]) -> dict[str, Any]:
    """A history message without our own extension fields (a client echoing our answer back)."""
    if message.get("role") != "assistant" or not any(k in message for k in _OWN_FIELDS):
        return message
    return {k: v for k, v in message.items() if k not in _OWN_FIELDS}


def render_constrained(messages: list[dict[str, Any]], system_text: str) -> list[dict[str, Any]]:
    """Native history as plain chat for models without tool support."""
    out: list[dict[str, Any]] = []
    names: dict[str, str] = {}
    system_parts = [system_text]
    for message in messages:
        role = message.get("role")
        if role in ("system", "developer"):
            content = message.get("content")
            system_parts.append(content if isinstance(content, str) else " ".join(p.get("text", "") for p in content or [] if isinstance(p, dict)))
        elif role == "assistant" and message.get("tool_calls"):
            for call in message["tool_calls"]:
                function = call.get("function") or {}
                names[call.get("id", "")] = function.get("name", "")
                try:
                    arguments = orjson.loads(function.get("arguments") or "{}")
                except orjson.JSONDecodeError:
                    arguments = {}
                out.append({"role": "assistant", "content": orjson.dumps({"tool": function.get("name"), "arguments": arguments}).decode()})
        elif role == "tool":
            content = message.get("content")
            text = content if isinstance(content, str) else orjson.dumps(content).decode()
            out.append(tool_result_message(names.get(message.get("tool_call_id", ""), "tool"), text))
        else:
            out.append(message)
    return [{"role": "system", "content": "\n\n".join(p for p in system_parts if p)}, *out]


class RequestBuilder:
    """Builds the upstream body of each model call of one run from the client's request."""

    __slots__ = ("_builtin_schemas", "_offer", "_payload", "_upstream_model")

    def __init__(self, payload: dict[str, Any], upstream_model: str, offer: ToolOffer, builtin_schemas: list[dict[str, Any]]) -> None:
        self._payload = payload
        self._upstream_model = upstream_model
        self._offer = offer
        # The registry's schemas of offer.builtin_names, in that order.
        self._builtin_schemas = builtin_schemas

    def system_message(self, template: str | None) -> dict[str, Any] | None:
        """The native-mode system prompt naming the built-in tools (None without built-ins)."""
        if not self._offer.builtin_names:
            return None
        prompt = (template or NATIVE_SYSTEM_PROMPT).format(names=", ".join(self._offer.builtin_names))
        return {"role": "system", "content": prompt}

    def tools_for_turn(self, *, final: bool, first_step: bool) -> tuple[list[dict[str, Any]], Any]:
        """(tools offered, upstream tool_choice) for the next model call."""
        offer = self._offer
        builtin = self._builtin_schemas
        client = [] if offer.client_choice == "none" else offer.client_tools
        tools = [*builtin, *client]
        if final and offer.required_client_names:
            # The answer must be a client call (step limit, repeat, or an answer without one): offer only those.
            forced = [t for t in client if (t.get("function") or {}).get("name") in offer.required_client_names]
            return forced, (offer.client_choice if isinstance(offer.client_choice, dict) else "required")
        if final:
            # Still offered (a history with tool calls but no tools is refused by
            # some upstreams), but the model may not call any.
            return tools, ("none" if tools else None)
        choice = offer.client_choice
        if choice == "none":
            choice = "auto"
        if offer.builtin_choice is not None and first_step and choice == "auto" and builtin:
            choice = offer.builtin_choice
        return tools, (choice if tools else None)

    def build(self, messages: list[dict[str, Any]], *, final: bool, first_step: bool, constrained: bool) -> dict[str, Any]:
        """The streamed upstream body for a turn over ``messages`` (native history)."""
        tools, tool_choice = self.tools_for_turn(final=final, first_step=first_step)
        body = {k: v for k, v in self._payload.items() if k not in _MANAGED}
        body["model"] = self._upstream_model
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
        if constrained:
            return self._constrained(body, messages, tools, tool_choice, final)
        body["messages"] = messages
        if tools:
            body["tools"] = tools
            if tool_choice is not None:
                body["tool_choice"] = tool_choice
        else:
            body.pop("parallel_tool_calls", None)
        return body

    def _constrained(self, body: dict[str, Any], messages: list[dict[str, Any]], tools: list[dict[str, Any]], tool_choice: Any, final: bool) -> dict[str, Any]:
        offer = self._offer
        if "temperature" not in self._payload:
            # Greedy steps: small models pick tools and emit JSON far more reliably.
            body["temperature"] = 0
        forced = final and bool(offer.required_client_names)
        offered = [] if final and not forced else tools
        allow_answer = not forced and (final or (tool_choice not in ("required",) and not isinstance(tool_choice, dict)))
        if isinstance(tool_choice, dict):
            wanted = (tool_choice.get("function") or {}).get("name")
            offered = [t for t in offered if (t.get("function") or {}).get("name") == wanted] or offered
        system = instructions(offered, allow_answer=allow_answer or not offered, answer_schema=offer.answer_schema)
        if forced:
            system += "\n" + CLIENT_CALL_PROMPT
        elif final:
            system += "\n" + FINAL_ANSWER_PROMPT
        body["messages"] = render_constrained(messages, system)
        body["response_format"] = step_schema(offered, allow_answer=allow_answer or not offered, answer_schema=offer.answer_schema)
        return body
