"""Keyword hints that pick the first tool (and, where the request spells them out, its arguments)
for models too small to choose one.

Measured on the embedded SmolLM2-135M: at temperature 0 it answers "What is
the date today?" with an invented date rather than calling current_time, even
with only that tool offered, and as a pure classifier it picks tools at
random. For such models (``tool_hints`` on a route; on by default for the
embedded model) a plain, documented keyword rule forces the first step to call
the obviously useful tool. Models that can choose are never hinted.

Forcing the tool is not enough for arguments: the same model, forced to call
``python`` for "What is 123456789 * 987654321?", wrote the code ``{{code}}``,
and forced to call ``memory_save`` for "Remember that my favourite colour is
teal." it saved the schema's own description of the argument. So where the
request states the arguments plainly (an arithmetic expression, "remember
that X", a URL, "what did I tell you about Y"), :func:`hint_for` extracts them
and the loop runs that call itself; otherwise the model fills them in and the
registry's placeholder guard refuses what it copies from the schema.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "current_time",
        re.compile(r"\b(what(?:'s| is)? (?:the )?(?:date|time|day)|today|current (?:date|time)|what day|weekday|time is it|date is it)\b", re.IGNORECASE),
    ),
    # Before memory_save: "do you remember my dog's name?" is a question, not a fact to save.
    ("memory_search", re.compile(r"\b(do you remember|what did i (?:tell|say)|recall|what do you know about me)\b", re.IGNORECASE)),
    ("memory_save", re.compile(r"\b(remember(?: that| this| my|:)|note that|don'?t forget)(?:\b|\s)", re.IGNORECASE)),
    ("fetch_page", re.compile(r"https?://\S+", re.IGNORECASE)),
    ("web_search", re.compile(r"\b(search|look up|latest|news|on the web|online)\b", re.IGNORECASE)),
    ("python", re.compile(r"(\d\s*[-+*/^%×÷]\s*\d|\d\s*[xX]\s*\d|\b(calculate|compute|sqrt|factorial|prime|sum of)\b)", re.IGNORECASE)),
)


@dataclass(frozen=True, slots=True)
class Hint:
    """The tool the first step must call; ``arguments`` when the request spells them out, else None."""

    tool: str
    arguments: dict[str, Any] | None = None


def hinted_tool(message: str, offered: Iterable[str]) -> str | None:
    """The tool the first step should call for ``message``, if a rule clearly applies."""
    hint = hint_for(message, offered)
    return hint.tool if hint else None


def hint_for(message: str, offered: Iterable[str]) -> Hint | None:
    available = set(offered)
    for name, pattern in _RULES:
        if name in available and pattern.search(message):
            return Hint(name, _EXTRACTORS[name](message))
    return None


# -- argument extraction -------------------------------------------------------------

_NUMBER = r"\d[\d_]*(?:\.\d+)?"
# A run of numbers, operators and parentheses; checked with ast afterwards.
_EXPRESSION = re.compile(r"[-+(]*\s*" + _NUMBER + r"(?:\s*(?:\*\*|[-+*/%^×÷xX])\s*[-+(]*\s*" + _NUMBER + r"\s*\)*)+")
_ALLOWED_NODES = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Constant, ast.operator, ast.unaryop)


def _python_arguments(message: str) -> dict[str, Any] | None:
    # "1,234,567" thousands separators; "×", "÷", "x" between numbers; "^" as power (what people mean).
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", message)
    best = ""
    for match in _EXPRESSION.finditer(text):
        candidate = match.group(0).strip()
        if len(candidate) > len(best):
            best = candidate
    if not best:
        return None
    expression = re.sub(r"\s*[xX×]\s*", " * ", best).replace("÷", "/").replace("^", "**")
    expression = " ".join(expression.split())
    # Balance what the regex cut: drop unmatched leading "(" / trailing ")".
    while expression.count("(") > expression.count(")") and expression.startswith("("):
        expression = expression[1:].strip()
    while expression.count(")") > expression.count("(") and expression.endswith(")"):
        expression = expression[:-1].strip()
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError:
        return None
    if not all(isinstance(node, _ALLOWED_NODES) for node in ast.walk(tree)):
        return None
    if not any(isinstance(node, ast.BinOp) for node in ast.walk(tree)):
        return None
    return {"code": f"print({expression})"}


_SAVE_FACT = re.compile(
    # "remember that X", "remember: X", "remember my X", "note that X", "don't forget that X";
    # not "remember this" (nothing stated: the model fills it, the guards check it).
    r"\b(?:remember|note|don'?t forget)\s*(?:\bthat\b|:)\s*(?P<fact>.+)|\bremember\s+(?P<mine>my\b.+)",
    re.IGNORECASE | re.DOTALL,
)
# First person to third, so the memory reads right in a later conversation.
_PERSON = (
    (re.compile(r"\bI am\b|\bI'm\b", re.IGNORECASE), "the user is"),
    (re.compile(r"\bI was\b", re.IGNORECASE), "the user was"),
    (re.compile(r"\bI have\b|\bI've\b", re.IGNORECASE), "the user has"),
    (re.compile(r"\bmy\b", re.IGNORECASE), "the user's"),
)
_FIRST_PERSON_LEFT = re.compile(r"\b(?:I|me|mine|myself|I'd|I'll)\b", re.IGNORECASE)


def _memory_save_arguments(message: str) -> dict[str, Any] | None:
    match = _SAVE_FACT.search(message)
    if match is None:
        return None
    fact = " ".join((match.group("fact") or match.group("mine")).split()).strip(" .!?;:,\"'")
    if len(fact.split()) < 2:
        return None  # "remember this": nothing stated to save
    rewritten = fact
    for pattern, replacement in _PERSON:
        rewritten = pattern.sub(replacement, rewritten)
    # Other first-person verbs ("I like tea"): quote the user rather than guess grammar.
    text = f"The user said: {fact}." if _FIRST_PERSON_LEFT.search(rewritten) else rewritten[0].upper() + rewritten[1:] + "."
    return {"text": text}


_STOPWORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "my",
        "me",
        "i",
        "you",
        "your",
        "is",
        "are",
        "was",
        "were",
        "do",
        "did",
        "what",
        "which",
        "who",
        "when",
        "where",
        "about",
        "of",
        "to",
        "for",
        "on",
        "in",
        "remember",
        "recall",
        "tell",
        "told",
        "say",
        "said",
        "know",
        "anything",
        "something",
        "please",
        "that",
        "this",
        "it",
    ]
)
_SEARCH_TOPIC = re.compile(
    r"\b(?:what did i (?:tell|say to) you about|what did i say about|do you remember|recall|what do you know about)\s+(?P<topic>.+)",
    re.IGNORECASE | re.DOTALL,
)


def _memory_search_arguments(message: str) -> dict[str, Any] | None:
    match = _SEARCH_TOPIC.search(message)
    if match is None:
        return None
    words = [w for w in re.findall(r"[\w'-]+", match.group("topic")) if w.casefold() not in _STOPWORDS]
    if not words:
        # "what do you know about me": memories are saved about "the user".
        return {"query": "user"} if re.search(r"\babout me\b", message, re.IGNORECASE) else None
    return {"query": " ".join(words)[:200]}


_URL = re.compile(r"https?://[^\s<>\"'`]+", re.IGNORECASE)


def _fetch_page_arguments(message: str) -> dict[str, Any] | None:
    match = _URL.search(message)
    if match is None:
        return None
    return {"url": match.group(0).rstrip(".,;:!?)]}")}


_SEARCH_PREFIX = re.compile(r"^\s*(?:please\s+)?(?:search(?:\s+the\s+web|\s+online)?(?:\s+for)?|look\s+up|find)\s+", re.IGNORECASE)


def _web_search_arguments(message: str) -> dict[str, Any] | None:
    query = _SEARCH_PREFIX.sub("", " ".join(message.split())).strip(" ?.!")
    return {"query": query[:400]} if query else None


_EXTRACTORS = {
    "current_time": lambda _message: {},
    "memory_save": _memory_save_arguments,
    "memory_search": _memory_search_arguments,
    "fetch_page": _fetch_page_arguments,
    "web_search": _web_search_arguments,
    "python": _python_arguments,
}
