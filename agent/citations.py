"""``url_citation`` annotations for answers that used web results.

OpenAI's search models mark the span of the answer that cites a page with
``{"type": "url_citation", "url_citation": {start_index, end_index, url,
title}}``. We can only know the span where the answer actually names the page,
so we look for the sources' URLs in the answer (a Markdown link counts as the
whole link) and annotate exactly those spans. Sources the answer does not name
still appear in the step records.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from toolrelay.tools.base import Source

# `[label](url)` or `[label](<url>)`: the closing `>` must match an opening `<`.
_MARKDOWN_LINK = re.compile(r"\[([^\]\n]{1,300})\]\(\s*(?:<(https?://[^\s)>]+)>|(https?://[^\s)>]+))\s*\)")


def _variants(url: str) -> list[str]:
    bare = url.rstrip("/")
    return [url] if bare == url else [url, bare]


def find_citations(answer: str, sources: Iterable[Source]) -> list[dict[str, Any]]:
    by_url: dict[str, Source] = {}
    for source in sources:
        for variant in _variants(source.url):
            by_url.setdefault(variant, source)
    if not answer or not by_url:
        return []
    spans: list[tuple[int, int, Source]] = []
    taken: list[tuple[int, int]] = []

    def free(start: int, end: int) -> bool:
        return all(end <= s or start >= e for s, e in taken)

    for match in _MARKDOWN_LINK.finditer(answer):
        url = match.group(2) or match.group(3)
        source = by_url.get(url) or by_url.get(url.rstrip("/"))
        if source is not None:
            spans.append((match.start(), match.end(), source))
            taken.append((match.start(), match.end()))
    # Longest URLs first so a page's URL is not claimed by its site's root URL.
    for variant in sorted(by_url, key=len, reverse=True):
        start = answer.find(variant)
        while start >= 0:
            end = start + len(variant)
            followed_by_path = end < len(answer) and answer[end] not in " \t\n)]>.,;:!?'\""
            if free(start, end) and not followed_by_path:
                spans.append((start, end, by_url[variant]))
                taken.append((start, end))
            start = answer.find(variant, end)
    spans.sort(key=lambda span: span[0])
    return [
        {"type": "url_citation", "url_citation": {"start_index": start, "end_index": end, "url": source.url, "title": source.title}}
        for start, end, source in spans
    ]
