"""find_citations: ``url_citation`` annotations exactly where the answer names a source."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from toolrelay.agent.citations import find_citations
from toolrelay.tools.base import Source

PAGE = Source("https://example.com/docs/page", "The page")
SITE = Source("https://example.com/", "The site")
OTHER = Source("https://other.org/a", "Other")


def spans(answer: str, sources: list[Source]) -> list[tuple[str, str]]:
    """(cited text, cited url) per annotation, in order."""
    out = []
    for item in find_citations(answer, sources):
        assert item["type"] == "url_citation"
        cite = item["url_citation"]
        out.append((answer[cite["start_index"] : cite["end_index"]], cite["url"]))
    return out


@pytest.mark.parametrize(
    ("answer", "sources", "expected"),
    [
        (
            "See https://example.com/docs/page for more.",
            [PAGE],
            [("https://example.com/docs/page", PAGE.url)],
        ),
        # A Markdown link is cited whole, label included.
        (
            "Read [the docs](https://example.com/docs/page).",
            [PAGE],
            [("[the docs](https://example.com/docs/page)", PAGE.url)],
        ),
        (
            "Read [the docs](<https://example.com/docs/page>).",
            [PAGE],
            [("[the docs](<https://example.com/docs/page>)", PAGE.url)],
        ),
        # A page's URL is not claimed by its site's root URL.
        (
            "From https://example.com/docs/page and https://example.com/.",
            [SITE, PAGE],
            [
                ("https://example.com/docs/page", PAGE.url),
                ("https://example.com/", SITE.url),
            ],
        ),
        # The root without its slash still names the site.
        (
            "Visit https://example.com today",
            [SITE],
            [("https://example.com", SITE.url)],
        ),
        # A longer URL that merely starts with a source's URL is another page.
        ("See https://other.org/abc", [OTHER], []),
        (
            "Twice: https://other.org/a, https://other.org/a.",
            [OTHER],
            [("https://other.org/a", OTHER.url), ("https://other.org/a", OTHER.url)],
        ),
        ("No link here.", [PAGE], []),
        ("", [PAGE], []),
        ("https://example.com/docs/page", [], []),
    ],
)
def test_citations(answer: str, sources: list[Source], expected: list[tuple[str, str]]) -> None:
    assert spans(answer, sources) == expected


def test_the_annotation_carries_the_source_title() -> None:
    (item,) = find_citations("At https://other.org/a", [OTHER])
    assert item == {
        "type": "url_citation",
        "url_citation": {
            "start_index": 3,
            "end_index": 22,
            "url": OTHER.url,
            "title": "Other",
        },
    }


_urls = st.sampled_from([PAGE, SITE, OTHER, Source("https://example.com/docs", "Docs")])
_words = st.sampled_from(
    [
        "see",
        "and",
        " ",
        ".",
        ",",
        "(",
        ")",
        "[x](",
        "\n",
        "https://",
        "example.com",
        "/docs",
        "/page",
    ]
)


@settings(max_examples=300, deadline=None)
@given(
    parts=st.lists(st.one_of(_words, _urls.map(lambda s: s.url)), max_size=12),
    sources=st.lists(_urls, max_size=4),
)
def test_spans_are_ordered_disjoint_and_name_their_source(parts: list[str], sources: list[Source]) -> None:
    answer = " ".join(parts)
    items: list[dict[str, Any]] = [i["url_citation"] for i in find_citations(answer, sources)]
    previous_end = 0
    for cite in items:
        assert previous_end <= cite["start_index"] < cite["end_index"] <= len(answer)
        previous_end = cite["end_index"]
        assert cite["url"] in {s.url for s in sources}
        assert cite["url"].rstrip("/") in answer[cite["start_index"] : cite["end_index"]]
