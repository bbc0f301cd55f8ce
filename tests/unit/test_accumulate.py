"""The one set of delta merge rules (app/accumulate.py), table-driven and by property.

The body collector's equality with the OpenAI SDK's own accumulator is
tested in test_body_collector.py; here the rules themselves, the tool-call
merge the agent's turn reader uses, and the two ways in (``add`` and the
usage tracker's ``add_generated``) agreeing on the text a token estimate counts.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from toolrelay.app.accumulate import ChoiceAccumulator, CompletionAccumulator, ToolCallPieces, merge_logprobs
from toolrelay.app.errors import server_error
from toolrelay.app.events import ChoiceDelta, ChoiceMessage, Event, Failure, KeepAlive, ResponseMeta, UsageReport


def merged(*events: Event) -> dict[str, Any]:
    completion = CompletionAccumulator()
    for event in events:
        completion.add(event)
    return completion.choice(0).merged_message()


def call(index: int, call_id: str | None = None, name: str | None = None, arguments: str | None = None, **extra: Any) -> dict[str, Any]:
    fragment: dict[str, Any] = {"index": index, **extra}
    if call_id is not None:
        fragment["id"] = call_id
    function = {k: v for k, v in (("name", name), ("arguments", arguments)) if v is not None}
    if function:
        fragment["function"] = function
    return fragment


@dataclass
class Case:
    name: str
    deltas: list[dict[str, Any]]
    expected: dict[str, Any]
    finish_reasons: list[str | None] = field(default_factory=list)


BASE = {"role": "assistant", "content": None, "refusal": None}
CASES = [
    Case("nothing sent", [], BASE),
    Case("text pieces concatenated", [{"content": "Hel"}, {"content": "lo"}], {**BASE, "content": "Hello"}),
    Case("an empty piece still states the field", [{"role": "assistant", "content": ""}], {**BASE, "content": ""}),
    Case("role is never merged", [{"role": "assistant"}, {"role": "assistant", "content": "a"}], {**BASE, "content": "a"}),
    Case("null values are skipped", [{"content": "a"}, {"content": None, "refusal": None}], {**BASE, "content": "a"}),
    Case(
        "refusal and reasoning are text too",
        [{"refusal": "no"}, {"reasoning_content": "th"}, {"reasoning_content": "ink"}, {"refusal": "pe"}],
        {**BASE, "refusal": "nope", "reasoning_content": "think"},
    ),
    Case("an unknown text field is concatenated", [{"x_note": "a"}, {"x_note": "b"}], {**BASE, "x_note": "ab"}),
    Case("lists are extended", [{"annotations": [1]}, {"annotations": [2, 3]}], {**BASE, "annotations": [1, 2, 3]}),
    Case("other values are replaced", [{"audio": {"id": "a"}}, {"audio": {"id": "b"}}], {**BASE, "audio": {"id": "b"}}),
    Case(
        "tool calls merged by index, id and type from their first fragment",
        [
            {"tool_calls": [call(0, "call_a", "get_", "", type="function")]},
            {"tool_calls": [call(0, name="weather", arguments='{"ci')]},
            {"tool_calls": [call(1, "call_b", "now", "{}")]},
            {"tool_calls": [call(0, arguments='ty":1}')]},
        ],
        {
            **BASE,
            "tool_calls": [
                {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":1}'}},
                {"id": "call_b", "type": "function", "function": {"name": "now", "arguments": "{}"}},
            ],
        },
    ),
    Case(
        "a later id replaces, a missing index means 0, a missing type means function",
        [{"tool_calls": [{"function": {"name": "f"}}]}, {"tool_calls": [{"index": 0, "id": "call_late"}]}],
        {**BASE, "tool_calls": [{"id": "call_late", "type": "function", "function": {"name": "f", "arguments": ""}}]},
    ),
    Case(
        "tool calls come out in index order",
        [{"tool_calls": [call(2, "c", "two")]}, {"tool_calls": [call(0, "a", "zero")]}],
        {
            **BASE,
            "tool_calls": [
                {"id": "a", "type": "function", "function": {"name": "zero", "arguments": ""}},
                {"id": "c", "type": "function", "function": {"name": "two", "arguments": ""}},
            ],
        },
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_merge_rules(case: Case) -> None:
    assert merged(*(ChoiceDelta(0, d) for d in case.deltas)) == case.expected


def test_a_whole_message_replaces_the_pieces_and_later_deltas_extend_it() -> None:
    events = [
        ChoiceDelta(0, {"content": "partial", "tool_calls": [call(0, "x", "f")]}),
        ChoiceMessage(0, {"content": "whole"}, "stop"),
        ChoiceDelta(0, {"content": "!"}),
    ]
    assert merged(*events) == {**BASE, "content": "whole!"}


def test_finish_reason_logprobs_usage_meta_and_failure() -> None:
    completion = CompletionAccumulator()
    error = server_error("boom")
    for event in [
        ChoiceDelta(0, {"content": "a"}, logprobs={"content": [{"token": "a"}], "refusal": None}),
        ChoiceDelta(0, {"content": "b"}, "length", logprobs={"content": [{"token": "b"}]}),
        UsageReport({"prompt_tokens": 1}, estimated=True),
        ResponseMeta({"system_fingerprint": "fp", "invented": 1, "service_tier": None}),
        KeepAlive(),
        Failure(error),
    ]:
        completion.add(event)
    choice = completion.choice(0)
    assert choice.finish_reason == "length"
    assert choice.logprobs == {"content": [{"token": "a"}, {"token": "b"}], "refusal": None}
    assert (completion.usage, completion.usage_estimated) == ({"prompt_tokens": 1}, True)
    assert completion.meta == {"system_fingerprint": "fp"}
    assert completion.error is error


@pytest.mark.parametrize(
    ("merged_so_far", "new", "expected"),
    [
        (None, None, None),
        (None, "not a dict", None),
        ({"content": [1]}, None, {"content": [1]}),
        (None, {"content": [1], "refusal": None}, {"content": [1], "refusal": None}),
        ({"content": [1], "refusal": None}, {"content": [2], "refusal": [3]}, {"content": [1, 2], "refusal": [3]}),
        ({"content": [1]}, {"content": None}, {"content": [1]}),
    ],
)
def test_merge_logprobs(merged_so_far: dict[str, Any] | None, new: Any, expected: dict[str, Any] | None) -> None:
    assert merge_logprobs(merged_so_far, new) == expected


def test_merge_logprobs_does_not_alias_the_first_chunk() -> None:
    first = {"content": [1]}
    merged_so_far = merge_logprobs(None, first)
    merge_logprobs(merged_so_far, {"content": [2]})
    assert first == {"content": [1]}


@pytest.mark.parametrize(
    ("events", "text"),
    [
        ([], ""),
        ([ChoiceDelta(0, {"content": "Hi "}), ChoiceDelta(0, {"refusal": "r", "reasoning_content": "think"})], "Hi "),
        (
            [ChoiceDelta(0, {"content": "a", "tool_calls": [call(0, "x", "get", '{"q"')]}), ChoiceDelta(0, {"tool_calls": [call(0, arguments=":1}")]})],
            'aget{"q":1}',
        ),
        (
            [
                ChoiceMessage(
                    0, {"content": "whole", "tool_calls": [{"id": "x", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}, "tool_calls"
                )
            ],
            "wholef{}",
        ),
        ([ChoiceMessage(0, {"content": None}, "stop")], ""),
        ([ChoiceDelta(1, {"content": "one"}), ChoiceDelta(0, {"content": "zero"})], "zeroone"),
    ],
)
def test_generated_text_is_the_same_both_ways_in(events: list[Event], text: str) -> None:
    merging, pieces = CompletionAccumulator(), CompletionAccumulator()
    for event in events:
        merging.add(event)
        pieces.add_generated(event)
    assert merging.generated_text() == text
    assert Counter(pieces.generated_text()) == Counter(text)
    assert pieces.choices == {}  # add_generated keeps no merged choice


def test_add_generated_still_takes_the_usage_report() -> None:
    completion = CompletionAccumulator()
    completion.add_generated(UsageReport({"prompt_tokens": 3}))
    assert completion.usage == {"prompt_tokens": 3}


class _Reader(ToolCallPieces):
    __slots__ = ("seen",)

    def __init__(self, call_id: str = "", call_type: str = "function") -> None:
        super().__init__(call_id, call_type)
        self.seen = 0


def test_merge_tool_call_reports_the_call_whether_it_opened_and_the_arguments_piece() -> None:
    choice = ChoiceAccumulator(_Reader)
    first, opened, arguments = choice.merge_tool_call(call(0, "call_a", "f", ""))
    assert (type(first), opened, arguments) == (_Reader, True, None)
    again, opened, arguments = choice.merge_tool_call(call(0, arguments="{}"))
    assert (again is first, opened, arguments) == (True, False, "{}")
    assert (first.id, first.name, first.arguments) == ("call_a", "f", "{}")


# -- properties -----------------------------------------------------------------

_piece = st.text(max_size=4)
_fragment = st.fixed_dictionaries(
    {"index": st.integers(0, 2)},
    optional={
        "id": st.one_of(st.none(), st.text(alphabet="abc_", max_size=4)),
        "function": st.fixed_dictionaries({}, optional={"name": st.one_of(st.none(), _piece), "arguments": st.one_of(st.none(), _piece)}),
    },
)


@settings(max_examples=200, deadline=None)
@given(fragments=st.lists(_fragment, max_size=30))
def test_tool_calls_match_a_plain_reference(fragments: list[dict[str, Any]]) -> None:
    """By index: the last non-empty id, every non-empty name and arguments piece in order."""
    reference: dict[int, list[str]] = {}
    for fragment in fragments:
        slot = reference.setdefault(fragment["index"], ["", "", ""])
        function = fragment.get("function") or {}
        slot[0] = fragment.get("id") or slot[0]
        slot[1] += function.get("name") or ""
        slot[2] += function.get("arguments") or ""
    choice = ChoiceAccumulator(ToolCallPieces)
    for fragment in fragments:
        choice.merge_tool_call(fragment)
    assert {i: [c.id, c.name, c.arguments] for i, c in choice.tool_calls.items()} == reference


_delta = st.fixed_dictionaries(
    {},
    optional={
        "role": st.just("assistant"),
        "content": st.one_of(st.none(), _piece),
        "refusal": st.one_of(st.none(), _piece),
        "tool_calls": st.lists(_fragment, max_size=2),
    },
)


@settings(max_examples=200, deadline=None)
@given(deltas=st.lists(st.tuples(st.integers(0, 1), _delta), max_size=30))
def test_both_ways_in_count_the_same_characters(deltas: list[tuple[int, dict[str, Any]]]) -> None:
    """The usage tracker's pieces-only reading counts what the full merge would (in arrival order)."""
    merging, pieces = CompletionAccumulator(), CompletionAccumulator()
    for index, delta in deltas:
        merging.add(ChoiceDelta(index, delta))
        pieces.add_generated(ChoiceDelta(index, delta))
    assert Counter(pieces.generated_text()) == Counter(merging.generated_text())


@settings(max_examples=200, deadline=None)
@given(pieces=st.lists(_piece, max_size=30))
def test_text_is_the_concatenation(pieces: list[str]) -> None:
    message = merged(*(ChoiceDelta(0, {"content": p}) for p in pieces))
    assert message["content"] == ("".join(pieces) if pieces else None)
