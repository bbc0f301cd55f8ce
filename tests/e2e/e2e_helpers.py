"""Helpers for the end-to-end suite: scripting the fake model, reading agent responses, local web.

Relays, clients and the admin helper are shared with the other suites: :mod:`fakes`.

Imported after conftest.py has put tests/web on sys.path (for ``web_test_servers``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from web_test_servers import Hit, LocalServer
from web_test_servers import Reply as PageReply

from fakes.upstream import Reply

Turn = Callable[[list[dict[str, Any]]], Reply]


def extra(obj: Any, key: str) -> Any:
    """A non-standard field of an SDK model (``message.agent_steps``) or of a dict."""
    if isinstance(obj, dict):
        return obj.get(key)
    value = getattr(obj, key, None)
    if value is not None:
        return value
    return (getattr(obj, "model_extra", None) or {}).get(key)


def as_dict(obj: Any) -> Any:
    """SDK models (extension fields included) to plain JSON-shaped values."""
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    if isinstance(obj, list):
        return [as_dict(x) for x in obj]
    return obj


def agent_steps(message: Any) -> list[dict[str, Any]]:
    steps = extra(message, "agent_steps")
    assert isinstance(steps, list), f"no agent_steps list on the message: {message!r}"
    return [as_dict(s) for s in steps]


def step_records(message: Any, kind: str, tool: str | None = None) -> list[dict[str, Any]]:
    return [s for s in agent_steps(message) if s.get("type") == kind and (tool is None or s.get("tool") == tool)]


def annotations_of(message: Any) -> list[dict[str, Any]]:
    value = getattr(message, "annotations", None)
    if value is None and isinstance(message, dict):
        value = message.get("annotations")
    return [as_dict(a) for a in value or []]


def tool_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``role: tool`` messages of a request the fake upstream received, in order."""
    return [m for m in body.get("messages") or [] if isinstance(m, dict) and m.get("role") == "tool"]


def tool_text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content if isinstance(content, str) else ""


def system_texts(body: dict[str, Any]) -> list[str]:
    return [m["content"] for m in body.get("messages") or [] if isinstance(m, dict) and m.get("role") == "system" and isinstance(m.get("content"), str)]


def call(name: str, **arguments: Any) -> Reply:
    """A model turn that calls one tool."""
    return Reply(tool_calls=[{"name": name, "arguments": arguments}])


def scripted(*turns: Turn) -> Callable[[dict[str, Any]], Reply]:
    """A responder playing ``turns`` in order, chosen from the request itself.

    Turn ``k`` (0-based) answers a request that already carries ``k`` tool
    results; each turn gets the tool messages of the request and returns the
    model's reply. Past the last turn the last one is repeated.
    """

    def respond(body: dict[str, Any]) -> Reply:
        results = tool_messages(body)
        turn = turns[min(len(results), len(turns) - 1)]
        return turn(results)

    return respond


def last_tool_text(results: list[dict[str, Any]]) -> str:
    assert results, "the fake expected a tool result in the request"
    return tool_text(results[-1])


def find_line(text: str, pattern: str) -> str:
    match = re.search(pattern, text, re.MULTILINE)
    assert match is not None, f"pattern {pattern!r} not in tool output:\n{text}"
    return match.group(1) if match.groups() else match.group(0)


class SearxSite:
    """A LocalServer with pages and a SearXNG-shaped JSON search endpoint.

    ``results`` (a list of ``{"url", "title", "content"}``) is what every
    search answers; ``queries`` records the ``q`` parameters received.
    """

    def __init__(self, server: LocalServer) -> None:
        self.server = server
        self.url = server.url
        self.results: list[dict[str, Any]] = []
        self.queries: list[dict[str, list[str]]] = []
        #: When set, every search answers this instead (an engine outage).
        self.fail: PageReply | None = None
        server.route("/search", self._search)

    def _search(self, hit: Hit) -> PageReply:
        self.queries.append(hit.query)
        if self.fail is not None:
            return self.fail
        if hit.query.get("format") != ["json"]:
            return PageReply(403, b"format not allowed")
        body = {"query": hit.query.get("q", [""])[0], "number_of_results": len(self.results), "results": list(self.results), "unresponsive_engines": []}
        return PageReply(200, json.dumps(body).encode(), content_type="application/json")

    def page(self, path: str, html: str) -> str:
        """Serve ``html`` at ``path``; returns the page's absolute URL."""
        self.server.route(path, PageReply(200, html.encode("utf-8"), content_type="text/html; charset=utf-8"))
        return self.url + path

    def count(self, path: str) -> int:
        return self.server.count(path)

    def reset(self) -> None:
        self.results = []
        self.queries = []
        self.fail = None
