"""Keyword hints that pick the first tool for models too small to choose one.

Measured on the embedded SmolLM2-135M: at temperature 0 it answers "What is
the date today?" with an invented date rather than calling current_time, even
with only that tool offered, and as a pure classifier it picks tools at
random. For such models (``tool_hints`` on a route; on by default for the
embedded model) a plain, documented keyword rule forces the first step to call
the obviously useful tool. Models that can choose are never hinted.
"""

from __future__ import annotations

import re
from typing import Iterable

_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("current_time", re.compile(r"\b(what(?:'s| is)? (?:the )?(?:date|time|day)|today|current (?:date|time)|what day|weekday|time is it|date is it)\b", re.I)),
    ("memory_save", re.compile(r"\b(remember (?:that|this|my)|note that|don'?t forget)\b", re.I)),
    ("memory_search", re.compile(r"\b(do you remember|what did i (?:tell|say)|recall|what do you know about me)\b", re.I)),
    ("fetch_page", re.compile(r"https?://\S+", re.I)),
    ("web_search", re.compile(r"\b(search|look up|latest|news|on the web|online)\b", re.I)),
    ("python", re.compile(r"(\d\s*[-+*/^%]\s*\d|\b(calculate|compute|sqrt|factorial|prime|sum of)\b)", re.I)),
)


def hinted_tool(message: str, offered: Iterable[str]) -> str | None:
    """The tool the first step should call for ``message``, if a rule clearly applies."""
    available = set(offered)
    for name, pattern in _RULES:
        if name in available and pattern.search(message):
            return name
    return None
