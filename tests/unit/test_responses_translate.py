"""The Responses-to-chat translation (app/responses/translate.py), table-driven, and the stream writer over event lists."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from toolrelay.app.events import ChoiceDelta, ChoiceMessage, UsageReport
from toolrelay.app.responses import ResponseStreamWriter, chat_payload, output_items, parse_request, responses_usage


def _messages(body: dict[str, Any], history: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    return chat_payload(parse_request({"model": "m", **body}), history or [])["messages"]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"input": "hi"}, [{"role": "user", "content": "hi"}]),
        ({"input": "hi", "instructions": "be nice"}, [{"role": "system", "content": "be nice"}, {"role": "user", "content": "hi"}]),
        ({"input": [{"role": "developer", "content": "rules"}]}, [{"role": "system", "content": "rules"}]),
        (
            {"input": [{"role": "user", "content": [{"type": "input_text", "text": "a"}, {"type": "input_text", "text": "b"}]}]},
            [{"role": "user", "content": "ab"}],
        ),
        (
            {"input": [{"role": "assistant", "content": [{"type": "output_text", "text": "said", "annotations": []}]}]},
            [{"role": "assistant", "content": "said"}],
        ),
        (
            {
                "input": [
                    {"role": "assistant", "content": "let me check"},
                    {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
                    {"type": "function_call", "call_id": "c2", "name": "g", "arguments": "{}"},
                    {"type": "function_call_output", "call_id": "c1", "output": "1"},
                    {"type": "function_call_output", "call_id": "c2", "output": [{"type": "input_text", "text": "2"}]},
                ]
            },
            [
                {
                    "role": "assistant",
                    "content": "let me check",
                    "tool_calls": [
                        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                        {"id": "c2", "type": "function", "function": {"name": "g", "arguments": "{}"}},
                    ],
                },
                {"role": "tool", "tool_call_id": "c1", "content": "1"},
                {"role": "tool", "tool_call_id": "c2", "content": "2"},
            ],
        ),
        ({"input": [{"type": "reasoning", "id": "rs_1", "summary": []}, {"role": "user", "content": "x"}]}, [{"role": "user", "content": "x"}]),
    ],
)
def test_input_to_messages(body: dict[str, Any], expected: list[dict[str, Any]]) -> None:
    assert _messages(body) == expected


@pytest.mark.parametrize(
    ("body", "field", "expected"),
    [
        ({"max_output_tokens": 9}, "max_tokens", 9),
        ({"text": {"format": {"type": "json_object"}}}, "response_format", {"type": "json_object"}),
        ({"text": {"format": {"type": "text"}}}, "response_format", None),
        ({"reasoning": {"effort": "high"}}, "reasoning_effort", "high"),
        ({"safety_identifier": "s", "user": "u"}, "user", "s"),
        ({"tool_choice": "none"}, "tool_choice", "none"),
        ({"tools": [{"type": "function", "name": "f"}], "tool_choice": "required"}, "tool_choice", "required"),
        (
            {"tools": [{"type": "function", "name": "f", "strict": False}]},
            "tools",
            [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}],
        ),
    ],
)
def test_settings_to_chat(body: dict[str, Any], field: str, expected: Any) -> None:
    assert chat_payload(parse_request({"model": "m", "input": "x", **body}), []).get(field) == expected


def test_history_comes_before_the_new_input() -> None:
    history = [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "q1"}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "a1", "annotations": []}]},
    ]
    assert _messages({"input": "q2"}, history) == [
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "q2"},
    ]


def test_output_items_and_usage() -> None:
    message = {"role": "assistant", "content": "hi", "reasoning_content": "hmm", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{}"}}]}
    items = output_items(message, "tool_calls")
    assert [item["type"] for item in items] == ["reasoning", "message", "function_call"]
    assert items[2]["call_id"] == "c"
    usage = responses_usage(
        {"prompt_tokens": 5, "completion_tokens": 2, "prompt_tokens_details": {"cached_tokens": 3}, "completion_tokens_details": {"reasoning_tokens": 1}}
    )
    assert usage == {
        "input_tokens": 5,
        "input_tokens_details": {"cached_tokens": 3, "cache_write_tokens": 0},
        "output_tokens": 2,
        "output_tokens_details": {"reasoning_tokens": 1},
        "total_tokens": 7,
    }


@given(st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=20))
def test_stream_writer_joins_the_deltas(pieces: list[str]) -> None:
    """However the text is cut, the final item holds it whole and the sequence numbers count up."""
    writer = ResponseStreamWriter(parse_request({"model": "m", "input": "x", "stream": True}), "resp_1", 0)
    out = writer.start()
    for piece in pieces:
        out += writer.feed(ChoiceDelta(0, {"content": piece}))
    out += writer.feed(ChoiceDelta(0, {}, finish_reason="stop"))
    out += writer.feed(UsageReport({"prompt_tokens": 1, "completion_tokens": 1}))
    out += writer.finish()
    assert writer.output[0]["content"][0]["text"] == "".join(pieces)
    assert out.count(b"event: ") == 8 + len(pieces)
    assert writer.status == "completed"


def test_stream_writer_takes_a_whole_message() -> None:
    writer = ResponseStreamWriter(parse_request({"model": "m", "input": "x"}), "resp_1", 0)
    writer.start()
    writer.feed(ChoiceMessage(0, {"role": "assistant", "content": "whole"}, "length"))
    writer.finish()
    assert writer.status == "incomplete" and writer.output[0]["status"] == "incomplete"
