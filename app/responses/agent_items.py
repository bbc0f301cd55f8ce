"""Agent mode on ``/v1/responses``: the request's hosted tools as built-ins, the run's steps as output items.

The run is chat agent mode's own (:meth:`agent.runner.AgentRunner.run` on the
translated chat body); this module does no I/O. It decides three things:

- Which built-ins a request gets. Hosted tool entries in ``tools`` select them
  (:data:`HOSTED_BUILTINS`): none listed means the server's default built-ins,
  as in chat agent mode; some listed means the built-ins they name plus those
  no hosted type stands for (memory, ``current_time``, ...), which a client
  could not ask for otherwise. ``agent_options.builtin_tools`` still wins.
- What the client's items become. Our own server-side items passed back
  (``web_search_call``, ``code_interpreter_call``, ``mcp_call``) are accepted
  and kept for the record, but not sent upstream: a run paused on a client
  function is resumed from the continuation store by the function's call id,
  which puts back the exact built-in steps (agent/continuations.py).
- How the run's step records become items (:class:`AgentStreamWriter`):
  ``web_search`` a ``web_search_call`` (action ``search``), ``fetch_page`` a
  ``web_search_call`` (action ``open_page``, OpenAI's own shape for a page read
  during a search), ``python`` a ``code_interpreter_call``, every other
  built-in an ``mcp_call`` with ``server_label: "toolrelay"``. Not a type of
  our own: the AI SDK's non-streamed response schema refuses any output item
  type it does not know, and the openai SDK reads one as a ``message`` with no
  content, which the Agents SDK then fails to read as text. An MCP server's
  tool (configured or per-request) is an ``mcp_call`` with that server's label
  and the server's own tool name; a call waiting for the client's approval an
  ``mcp_approval_request`` (app/responses/mcp_items.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import orjson

from toolrelay.app.errors import OpenAIError, invalid_request
from toolrelay.app.events import Event
from toolrelay.app.model_ids import split_agent_model
from toolrelay.app.responses.mcp_items import MCP_ITEM_TYPES, McpEntry, approval_chat_items, parse_mcp_entry, redacted_entry
from toolrelay.app.responses.stream import ResponseStreamWriter
from toolrelay.app.responses.translate import ResponsesRequest, chat_payload, new_item_id, parse_request

__all__ = [
    "CONTAINER_ID",
    "HOSTED_BUILTINS",
    "MCP_SERVER_LABEL",
    "SERVER_ITEM_TYPES",
    "AgentRequest",
    "AgentStreamWriter",
    "agent_chat_payload",
    "asks_for_agent",
    "parse_agent_request",
]

_WEB = ("web_search", "fetch_page")
#: Hosted tool types a request may list, and the built-ins each turns on.
HOSTED_BUILTINS: dict[str, tuple[str, ...]] = {
    "web_search": _WEB,
    "web_search_preview": _WEB,
    "web_search_2025_08_26": _WEB,
    "web_search_preview_2025_03_11": _WEB,
    "code_interpreter": ("python",),
}
_STANDS_FOR_HOSTED = frozenset(name for names in HOSTED_BUILTINS.values() for name in names)
#: Our server-side items, accepted back in ``input``.
SERVER_ITEM_TYPES = frozenset({"web_search_call", "code_interpreter_call", "mcp_call", *MCP_ITEM_TYPES})
MCP_SERVER_LABEL = "toolrelay"
#: Each python call runs in a fresh sandbox: no container persists between calls.
CONTAINER_ID = "toolrelay-sandbox"


@dataclass(slots=True)
class AgentRequest:
    """A Responses request for an agent model: what the translation needs, apart."""

    params: ResponsesRequest
    #: ``tools`` as sent (hosted entries included), for the response's echo.
    tools: list[dict[str, Any]]
    #: (position in ``tools``, type) of each hosted entry.
    hosted: list[tuple[int, str]]
    #: ``agent_options`` of the body (the chat extension, for clients sending ``extra_body``).
    agent_options: dict[str, Any] | None
    #: The ``mcp`` entries of ``tools`` (with their headers: never stored, never echoed).
    mcp: list[McpEntry] = field(default_factory=list)


def asks_for_agent(body: Any, default_model: str | None) -> bool:
    """``body`` names an agent model (``agent/<m>`` or ``agent:<m>``), or leaves the model to a default that is one."""
    model = cast("dict[str, Any]", body).get("model") if isinstance(body, dict) else None
    model = model or default_model
    return isinstance(model, str) and split_agent_model(model)[0]


def _server_item(raw: dict[str, Any], param: str) -> dict[str, Any]:
    item_id = raw.get("id")
    if item_id is not None and not isinstance(item_id, str):
        raise invalid_request(f"Invalid type for '{param}.id': expected a string.", param=f"{param}.id", code="invalid_type")
    if raw["type"] == "mcp_approval_response":
        if not isinstance(raw.get("approval_request_id"), str):
            raise invalid_request(
                f"Missing required parameter: '{param}.approval_request_id'.", param=f"{param}.approval_request_id", code="missing_required_parameter"
            )
        if not isinstance(raw.get("approve"), bool):
            raise invalid_request(f"Invalid type for '{param}.approve': expected a boolean.", param=f"{param}.approve", code="invalid_type")
    return {**raw, "id": item_id or new_item_id(raw["type"][:2])}


def parse_agent_request(body: Any, default_model: str | None) -> AgentRequest:
    """``body`` as :func:`parse_request` reads it, with hosted tools and our server-side items set apart."""
    if not isinstance(body, dict):
        return AgentRequest(parse_request(body, default_model), [], [], None)
    payload = dict(cast("dict[str, Any]", body))
    server_items: dict[int, dict[str, Any]] = {}
    raw_input = payload.get("input")
    if isinstance(raw_input, list):
        entries = list(cast("list[Any]", raw_input))
        for position, entry in enumerate(entries):
            if isinstance(entry, dict) and cast("dict[str, Any]", entry).get("type") in SERVER_ITEM_TYPES:
                server_items[position] = _server_item(cast("dict[str, Any]", entry), f"input[{position}]")
                # A reasoning item holds its place: parsed, kept in the record, never sent upstream.
                entries[position] = {"type": "reasoning", "summary": []}
        payload["input"] = entries
    tools: list[dict[str, Any]] = []
    hosted: list[tuple[int, str]] = []
    mcp: list[McpEntry] = []
    echoed: dict[int, dict[str, Any]] = {}
    functions: list[Any] = []
    positions: list[int] = []
    raw_tools = payload.get("tools")
    if isinstance(raw_tools, list):
        for position, entry in enumerate(cast("list[Any]", raw_tools)):
            kind = cast("dict[str, Any]", entry).get("type") if isinstance(entry, dict) else None
            if isinstance(kind, str) and kind in HOSTED_BUILTINS:
                hosted.append((position, kind))
                echoed[position] = cast("dict[str, Any]", entry)
            elif kind == "mcp":
                mcp.append(parse_mcp_entry(position, cast("dict[str, Any]", entry)))
                echoed[position] = redacted_entry(cast("dict[str, Any]", entry))
            else:
                functions.append(entry)
                positions.append(position)
        payload["tools"] = functions
    try:
        params = parse_request(payload, default_model)
    except OpenAIError as err:
        raise _renumbered(err, positions) from None
    for position, item in server_items.items():
        params.items[position] = item
    if echoed:
        # The echo keeps the client's order: function tools as parsed, hosted and mcp entries as sent (headers redacted).
        parsed = iter(params.tools)
        tools = [echoed[position] if position in echoed else next(parsed) for position in range(len(cast("list[Any]", raw_tools)))]
    else:
        tools = params.tools
    options = payload.get("agent_options")
    return AgentRequest(params, tools, hosted, cast("dict[str, Any]", options) if isinstance(options, dict) else None, mcp)


def _renumbered(err: OpenAIError, positions: list[int]) -> OpenAIError:
    """An error naming ``tools[k]`` of the function tools alone, renamed to the entry's position in the request."""
    param = err.param
    if param is None or not param.startswith("tools[") or "]" not in param:
        return err
    index, rest = param[6:].split("]", 1)
    if not index.isdigit() or int(index) >= len(positions):
        return err
    old, new = f"tools[{index}]", f"tools[{positions[int(index)]}]"
    return OpenAIError(err.status, err.message.replace(old, new), type=err.type, param=new + rest, code=err.code, headers=err.headers)


def builtins_for_hosted(hosted: Sequence[tuple[int, str]], enabled: Sequence[str]) -> list[str] | None:
    """The built-ins a request's hosted entries select (None: none listed, the server's default)."""
    if not hosted:
        return None
    wanted: set[str] = set()
    for position, kind in hosted:
        names = [n for n in HOSTED_BUILTINS[kind] if n in enabled]
        if not names:
            raise invalid_request(
                f"Tools of type {kind!r} are not available on this server: its built-in {HOSTED_BUILTINS[kind][0]!r} is not enabled.",
                param=f"tools[{position}].type",
                code="unsupported_value",
            )
        wanted.update(names)
    return [n for n in enabled if n in wanted or n not in _STANDS_FOR_HOSTED]


def agent_chat_payload(
    request: AgentRequest,
    history: list[dict[str, Any]],
    enabled_builtins: Sequence[str],
    *,
    mcp_names: Mapping[tuple[str, str], str] | None = None,
    mcp_selected: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The chat body the agent runs on: the translated conversation, the client's functions, the built-ins chosen.

    ``mcp_names`` maps (server label, tool) to the model's name for approval
    items; ``mcp_selected``, when the request listed configured MCP servers,
    the names of their tools (the only configured servers' tools offered).
    """
    params = request.params
    if mcp_names is not None or any(item.get("type") in MCP_ITEM_TYPES for item in (*history, *params.items)):
        names = dict(mcp_names or {})
        items = params.items
        params.items = approval_chat_items(items, names)
        try:
            payload = chat_payload(params, approval_chat_items(history, names))
        finally:
            params.items = items
    else:
        payload = chat_payload(params, history)
    # From here on the echo: hosted entries are no chat tools.
    request.params.tools = request.tools
    options = dict(request.agent_options or {})
    selected = builtins_for_hosted(request.hosted, enabled_builtins)
    if mcp_selected is not None:
        selected = [*(selected if selected is not None else enabled_builtins), *mcp_selected]
    if selected is not None and "builtin_tools" not in options:
        options["builtin_tools"] = selected
    if options:
        payload["agent_options"] = options
    return payload


# -------------------------------------------------------------------------- the run's steps as items

_STEP_FIELDS = ("agent_steps", "agent_steps_delta")


class _ToolItem:
    __slots__ = ("index", "item_id", "kind", "tool", "arguments")

    def __init__(self, index: int, item_id: str, kind: str, tool: str, arguments: Any) -> None:
        self.index = index
        self.item_id = item_id
        self.kind = kind
        self.tool = tool
        self.arguments = arguments


def _arguments_text(arguments: Any) -> str:
    return arguments if isinstance(arguments, str) else orjson.dumps(arguments).decode()


def _argument(arguments: Any, key: str) -> str:
    value = arguments.get(key) if isinstance(arguments, dict) else None
    return value if isinstance(value, str) else ""


class AgentStreamWriter(ResponseStreamWriter):
    """:class:`ResponseStreamWriter` for agent runs: step records become server-side items, citations annotations.

    The records' readable text (``reasoning_content`` of a step delta) is not
    turned into reasoning: the items are the record on Responses. Each record
    is read once, by its ``index`` (a stream repeats every record at its end).
    """

    __slots__ = ("_tool_items", "_last_record", "_sent", "_starts", "_annotations", "_mcp_tools", "_listings")

    def __init__(
        self,
        request: ResponsesRequest,
        response_id: str,
        created_at: int,
        *,
        mcp_tools: Mapping[str, tuple[str, str]] | None = None,
        listings: Sequence[dict[str, Any]] = (),
    ) -> None:
        super().__init__(request, response_id, created_at)
        # The model's name of each MCP tool -> (server label, the server's own tool name).
        self._mcp_tools = mcp_tools or {}
        # mcp_list_tools items, the first of the output (as OpenAI sends them).
        self._listings = listings
        self._tool_items: dict[str, _ToolItem] = {}
        self._last_record = -1
        # Characters of answer text so far, and where each message item's text starts in them:
        # the run's citations index into all the text it sent.
        self._sent = 0
        self._starts: dict[int, int] = {}
        self._annotations: dict[int, list[dict[str, Any]]] = {}

    def _delta(self, delta: dict[str, Any]) -> bytes:
        if "agent_steps" in delta or "agent_steps_delta" in delta or "annotations" in delta:
            out: list[bytes] = []
            for field in _STEP_FIELDS:
                for record in delta.get(field) or ():
                    if isinstance(record, dict):
                        self._record(out, cast("dict[str, Any]", record))
            annotations = delta.get("annotations")
            if annotations:
                self._annotate(out, annotations)
            rest = {k: v for k, v in delta.items() if k not in ("agent_steps", "agent_steps_delta", "annotations", "reasoning_content", "reasoning")}
            if rest:
                out.append(super()._delta(rest))
            return b"".join(out)
        content = delta.get("content")
        if not content:
            return super()._delta(delta)
        chunk = super()._delta(delta)
        text = self._text
        if text is not None and text.index not in self._starts:
            self._starts[text.index] = self._sent
        self._sent += len(content)
        return chunk

    def start(self) -> bytes:
        out = [super().start()]
        self._list(out)
        return b"".join(out)

    def feed(self, event: Event) -> bytes:
        if self._listings:
            # A non-streamed response never calls start(): the listings still come first.
            out: list[bytes] = []
            self._list(out)
            return b"".join(out) + super().feed(event)
        return super().feed(event)

    def _list(self, out: list[bytes]) -> None:
        listings, self._listings = self._listings, ()
        for listing in listings:
            index = len(self.output)
            item = dict(listing)
            self.output.append(item)
            where = {"item_id": item["id"], "output_index": index}
            self._event(out, "response.output_item.added", {"output_index": index, "item": {**item, "tools": []}})
            self._event(out, "response.mcp_list_tools.in_progress", dict(where))
            failed = item.get("error") is not None
            self._event(out, "response.mcp_list_tools.failed" if failed else "response.mcp_list_tools.completed", dict(where))
            self._event(out, "response.output_item.done", {"output_index": index, "item": item})

    # ------------------------------------------------------------------ built-in calls

    def _record(self, out: list[bytes], record: dict[str, Any]) -> None:
        index = record.get("index")
        if not isinstance(index, int) or index <= self._last_record:
            return
        self._last_record = index
        kind = record.get("type")
        if kind == "tool_call":
            self._open_tool(out, record)
        elif kind == "tool_result":
            self._close_tool(out, record)
        elif kind == "approval_request":
            self._approval_request(out, record)
        # `limit` and `repeat` notes: the response's status says a run was cut.

    def _open_tool(self, out: list[bytes], record: dict[str, Any]) -> None:
        self._close_text(out)
        self._close_reasoning(out)
        tool = str(record.get("tool") or "")
        arguments = record.get("arguments")
        kind = {"web_search": "search", "fetch_page": "open_page", "python": "code"}.get(tool, "mcp")
        index = len(self.output)
        if kind in ("search", "open_page"):
            item = {"id": new_item_id("ws"), "type": "web_search_call", "status": "in_progress", "action": self._web_action(kind, arguments, None)}
        elif kind == "code":
            item = {
                "id": new_item_id("ci"),
                "type": "code_interpreter_call",
                "status": "in_progress",
                "code": "",
                "container_id": CONTAINER_ID,
                "outputs": None,
            }
        else:
            label, name = self._mcp_tools.get(tool, (MCP_SERVER_LABEL, tool))
            item = {
                "id": new_item_id("mcp"),
                "type": "mcp_call",
                "status": "in_progress",
                "server_label": label,
                "name": name,
                "arguments": "",
                "output": None,
                "error": None,
            }
            approval = record.get("approval_request_id")
            if isinstance(approval, str):
                item["approval_request_id"] = approval
        self.output.append(item)
        opened = self._tool_items[str(record.get("call_id"))] = _ToolItem(index, item["id"], kind, tool, arguments)
        where = {"item_id": opened.item_id, "output_index": index}
        self._event(out, "response.output_item.added", {"output_index": index, "item": dict(item)})
        if kind == "code":
            code = _argument(arguments, "code")
            self._event(out, "response.code_interpreter_call.in_progress", dict(where))
            self._event(out, "response.code_interpreter_call_code.delta", {**where, "delta": code})
            self._event(out, "response.code_interpreter_call_code.done", {**where, "code": code})
            self._event(out, "response.code_interpreter_call.interpreting", dict(where))
        elif kind == "mcp":
            text = _arguments_text(arguments)
            self._event(out, "response.mcp_call.in_progress", dict(where))
            self._event(out, "response.mcp_call_arguments.delta", {**where, "delta": text})
            self._event(out, "response.mcp_call_arguments.done", {**where, "arguments": text})
        else:
            self._event(out, "response.web_search_call.in_progress", dict(where))
            self._event(out, "response.web_search_call.searching", dict(where))

    def _approval_request(self, out: list[bytes], record: dict[str, Any]) -> None:
        """A call the run paused on until the client approves it: an ``mcp_approval_request`` item, whole at once."""
        self._close_text(out)
        self._close_reasoning(out)
        tool = str(record.get("tool") or "")
        label, name = self._mcp_tools.get(tool, (MCP_SERVER_LABEL, tool))
        item = {
            "id": str(record.get("call_id")),
            "type": "mcp_approval_request",
            "server_label": label,
            "name": name,
            "arguments": _arguments_text(record.get("arguments") or "{}"),
        }
        index = len(self.output)
        self.output.append(item)
        self._event(out, "response.output_item.added", {"output_index": index, "item": item})
        self._event(out, "response.output_item.done", {"output_index": index, "item": item})

    @staticmethod
    def _web_action(kind: str, arguments: Any, sources: Any) -> dict[str, Any]:
        if kind == "open_page":
            return {"type": "open_page", "url": _argument(arguments, "url")}
        action: dict[str, Any] = {"type": "search", "query": _argument(arguments, "query")}
        if sources:
            action["sources"] = [{"type": "url", "url": s["url"]} for s in sources if isinstance(s, dict) and isinstance(s.get("url"), str)]
        return action

    def _close_tool(self, out: list[bytes], record: dict[str, Any]) -> None:
        opened = self._tool_items.pop(str(record.get("call_id")), None)
        if opened is None:
            return
        ok = record.get("status") == "ok"
        output = record.get("output")
        text = output if isinstance(output, str) else str(record.get("summary") or "")
        self._finish_tool(out, opened, "completed" if ok else "failed", text, record.get("sources"))

    def _finish_tool(self, out: list[bytes], opened: _ToolItem, status: str, text: str | None, sources: Any = None) -> None:
        item = dict(self.output[opened.index])
        item["status"] = status
        where = {"item_id": opened.item_id, "output_index": opened.index}
        done = status == "completed"
        if opened.kind in ("search", "open_page"):
            item["action"] = self._web_action(opened.kind, opened.arguments, sources)
            if done:
                self._event(out, "response.web_search_call.completed", where)
        elif opened.kind == "code":
            item["code"] = _argument(opened.arguments, "code")
            item["outputs"] = [{"type": "logs", "logs": text}] if text is not None else None
            if done:
                self._event(out, "response.code_interpreter_call.completed", where)
        else:
            item["arguments"] = _arguments_text(opened.arguments)
            item["output"] = text
            if not done:
                item["error"] = {"type": "mcp_tool_execution_error", "content": [{"type": "text", "text": text or ""}]}
            self._event(out, "response.mcp_call.completed" if done else "response.mcp_call.failed", where)
        self.output[opened.index] = item
        self._event(out, "response.output_item.done", {"output_index": opened.index, "item": item})

    # ------------------------------------------------------------------ citations

    def _annotate(self, out: list[bytes], annotations: list[dict[str, Any]]) -> None:
        """The run's ``url_citation`` spans (offsets into all its text) on the message items holding them."""
        starts = sorted(self._starts.items(), key=lambda entry: entry[1])
        for raw in annotations:
            cite = raw.get("url_citation") if isinstance(raw, dict) else None
            if not isinstance(cite, dict):
                continue
            cite = cast("dict[str, Any]", cite)
            start, end = int(cite.get("start_index") or 0), int(cite.get("end_index") or 0)
            holder = [(index, offset) for index, offset in starts if offset <= start]
            if not holder:
                continue
            index, offset = holder[-1]
            annotation = {
                "type": "url_citation",
                "start_index": start - offset,
                "end_index": end - offset,
                "url": cite.get("url"),
                "title": cite.get("title") or "",
            }
            found = self._annotations.setdefault(index, [])
            found.append(annotation)
            text = self._text
            if text is not None and text.index == index:
                self._event(
                    out,
                    "response.output_text.annotation.added",
                    {"item_id": text.item_id, "output_index": index, "content_index": 0, "annotation_index": len(found) - 1, "annotation": annotation},
                )
            else:
                # Text already closed (words before a tool call): only the final response carries it.
                self.output[index]["content"][0]["annotations"] = list(found)

    def _text_annotations(self, index: int) -> list[dict[str, Any]]:
        return self._annotations.get(index, [])

    def finish(self) -> bytes:
        # A run cut during a tool call (wall time) leaves its item open: it did not complete.
        out: list[bytes] = []
        for opened in list(self._tool_items.values()):
            self._finish_tool(out, opened, "failed", None)
        self._tool_items = {}
        out.append(super().finish())
        return b"".join(out)
