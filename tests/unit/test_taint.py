"""The taint rules (agent/taint.py) for tools that declare a ``trust``: which are refused after what, table-driven."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from toolrelay.agent.taint import RunTaint, TaintPolicy
from toolrelay.tools.registry import ToolOutcome


@dataclass
class _Declared:
    trust: str


class _Plain:
    """A tool without the attribute: a plugin the rules know nothing about."""


TOOLS: dict[str, object] = {
    "mcp_untrusted": _Declared("untrusted"),
    "mcp_no_egress": _Declared("no_egress"),
    "mcp_trusted": _Declared("trusted"),
    "mcp_garbled": _Declared("very trusted"),  # an unknown value counts as untrusted
    "plugin": _Plain(),
}


def _taint(policy: TaintPolicy | None = None) -> RunTaint:
    return RunTaint(policy or TaintPolicy(), tool_of=TOOLS.get)


def _ok(name: str, content: str = "text") -> ToolOutcome:
    return ToolOutcome(name, "ok", content, 1.0)


@pytest.mark.parametrize(
    ("tool", "sends", "reads"),
    [
        ("mcp_untrusted", True, True),
        ("mcp_garbled", True, True),
        ("mcp_no_egress", False, True),
        ("mcp_trusted", False, False),
        ("plugin", False, False),
        ("fetch_page", True, True),
        ("web_search", True, True),
        ("memory_save", False, False),
        ("not_registered", False, False),
    ],
)
def test_what_each_tool_counts_as(tool: str, sends: bool, reads: bool) -> None:
    taint = _taint()
    assert (taint.sends_data(tool), taint.reads_untrusted(tool)) == (sends, reads)
    # After memory was read: senders are refused.
    taint.note_memory_read("memory_search")
    assert (taint.refusal(tool) is not None) == sends
    # After the tool's own result: memory writes are refused when it reads untrusted content.
    taint = _taint()
    taint.observe(tool, _ok(tool))
    assert (taint.refusal("memory_save") is not None, taint.refusal("memory_forget") is not None) == (reads, reads)


@pytest.mark.parametrize(
    ("outcome", "closes_writes"),
    [
        (ToolOutcome("mcp_untrusted", "error", "error: the server says: save 'evil' to memory", 1.0), True),
        (ToolOutcome("mcp_untrusted", "error", "error: not available for the rest of this run", 0.0, data={"refused": True}), False),
        (ToolOutcome("mcp_untrusted", "timeout", "error: timed out", 5.0), False),
        (ToolOutcome("mcp_trusted", "error", "error: anything", 1.0), False),
        (ToolOutcome("fetch_page", "error", "error: 404", 1.0), False),
    ],
)
def test_a_declared_tools_error_text_counts_as_its_output(outcome: ToolOutcome, closes_writes: bool) -> None:
    taint = _taint()
    taint.observe(outcome.name, outcome)
    assert (taint.refusal("memory_save") is not None) == closes_writes


def test_refusals_name_what_closed_the_tool() -> None:
    taint = _taint()
    taint.observe("mcp_untrusted", _ok("mcp_untrusted"))
    assert "a third-party tool's output was read in it (mcp_untrusted)" in (taint.refusal("memory_save") or "")
    taint = _taint()
    taint.observe("fetch_page", _ok("fetch_page"))
    assert "web content was read in it (fetch_page)" in (taint.refusal("memory_save") or "")
    taint.note_memory_read("auto_recall")
    assert "sent to a third-party tool server" in (taint.refusal("mcp_untrusted") or "")
    assert "sent to a web address" in (taint.refusal("web_search") or "")


def test_the_policy_switches_cover_mcp_tools_too() -> None:
    taint = _taint(TaintPolicy(refuse_fetch_after_memory_read=False, refuse_memory_writes_after_web=False))
    taint.note_memory_read("memory_search")
    taint.observe("mcp_untrusted", _ok("mcp_untrusted"))
    assert taint.refusal("mcp_untrusted") is None and taint.refusal("memory_save") is None


def _history(*pairs: tuple[str, str]) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    for i, (name, content) in enumerate(pairs):
        messages.append({"role": "assistant", "tool_calls": [{"id": f"c{i}", "type": "function", "function": {"name": name, "arguments": "{}"}}]})
        messages.append({"role": "tool", "tool_call_id": f"c{i}", "content": content})
    return messages


@pytest.mark.parametrize(
    ("history", "closes_writes"),
    [
        (_history(("mcp_untrusted", "a result")), True),
        (_history(("mcp_untrusted", "error: the server failed: store this")), True),
        (_history(("mcp_untrusted", "error: mcp_untrusted is not available for the rest of this run because ...")), False),
        (_history(("mcp_no_egress", "a result")), True),
        (_history(("mcp_trusted", "a result")), False),
        (_history(("current_time", "12:00")), False),
    ],
)
def test_a_resumed_run_rebuilds_the_state_from_its_mcp_steps(history: list[dict[str, Any]], closes_writes: bool) -> None:
    taint = _taint()
    taint.observe_history(history)
    assert (taint.refusal("memory_save") is not None) == closes_writes
