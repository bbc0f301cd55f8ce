"""Keyword hints for models too small to pick a tool: rule order, offered tools, safe arguments.

The table of messages and the arguments they spell out lives with the
small-model agent tests (tests/agent/test_agent_small_model.py); these are
the rules' precedence and the properties that must hold for any message.
"""

from __future__ import annotations

import ast
import operator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from toolrelay.agent.hints import Hint, hint_for, hinted_tool

ALL = [
    "current_time",
    "memory_search",
    "memory_save",
    "fetch_page",
    "web_search",
    "python",
]


@pytest.mark.parametrize(
    ("message", "offered", "tool"),
    [
        # A question about a memory is a search, never a save.
        ("Do you remember that my dog is Rex?", ALL, "memory_search"),
        # Time beats everything after it.
        ("What is the date today? Search the news.", ALL, "current_time"),
        # A URL is fetched rather than searched for.
        ("search https://example.com/x", ALL, "fetch_page"),
        # Without the first rule's tool, the next matching rule applies.
        ("search https://example.com/x", ["web_search"], "web_search"),
        ("What is 2 + 2?", ["current_time", "web_search"], None),
        ("What is 2 + 2?", [], None),
        ("Hello there", ALL, None),
    ],
)
def test_rule_precedence_and_offered_tools(message: str, offered: list[str], tool: str | None) -> None:
    assert hinted_tool(message, offered) == tool


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ("what is 3 ÷ 4", "print(3 / 4)"),
        ("2 × 3 × 4", "print(2 * 3 * 4)"),
        ("((1+2)", "print((1+2))"),
        ("100 % 7", "print(100 % 7)"),
        ("compute 10 - -2", "print(10 - -2)"),
    ],
)
def test_python_expressions(message: str, code: str) -> None:
    assert hint_for(message, ["python"]) == Hint("python", {"code": code})


_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul}


@settings(max_examples=300, deadline=None)
@given(message=st.text(max_size=80), offered=st.lists(st.sampled_from(ALL), unique=True))
def test_any_message_gets_an_offered_tool_or_none(message: str, offered: list[str]) -> None:
    hint = hint_for(message, offered)
    if hint is None:
        return
    assert hint.tool in offered
    if hint.arguments is None:
        return
    if hint.tool == "python":
        code = hint.arguments["code"]
        assert code.startswith("print(") and code.endswith(")")
        tree = ast.parse(code[len("print(") : -1], mode="eval")
        # Only arithmetic: numbers, operators, parentheses; never a name, call or attribute.
        assert all(
            isinstance(
                n,
                (
                    ast.Expression,
                    ast.BinOp,
                    ast.UnaryOp,
                    ast.Constant,
                    ast.operator,
                    ast.unaryop,
                ),
            )
            for n in ast.walk(tree)
        )
    elif hint.tool == "fetch_page":
        assert hint.arguments["url"] in message
    elif hint.tool in ("web_search", "memory_search"):
        assert 0 < len(hint.arguments["query"]) <= 400
    elif hint.tool == "memory_save":
        assert hint.arguments["text"].endswith(".") and len(hint.arguments["text"].split()) >= 2


@settings(max_examples=200, deadline=None)
@given(
    a=st.integers(0, 10**6),
    b=st.integers(0, 10**6),
    op=st.sampled_from(["+", "-", "*", "x", "×"]),
)
def test_spelled_out_arithmetic_is_computed_as_written(a: int, b: int, op: str) -> None:
    hint = hint_for(f"What is {a} {op} {b}?", ["python"])
    assert hint is not None and hint.arguments is not None
    tree = ast.parse(hint.arguments["code"][len("print(") : -1], mode="eval").body
    assert isinstance(tree, ast.BinOp) and isinstance(tree.left, ast.Constant) and isinstance(tree.right, ast.Constant)
    expected = {"+": a + b, "-": a - b}.get(op, a * b)
    assert _OPS[type(tree.op)](tree.left.value, tree.right.value) == expected
