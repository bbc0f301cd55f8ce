"""Turning arbitrary user text into a safe FTS5 MATCH expression.

The query string a client or a model sends is never handed to FTS5 as syntax.
It is split into words on spaces and ASCII punctuation; each word becomes a
double-quoted FTS5 string (which FTS5 tokenizes like the stored text), so
``AND``, ``OR``, ``NEAR(``, ``*``, ``^``, ``"``, ``:``, ``-``, parentheses and
column filters such as ``scope_key:...`` are plain words or separators, never
operators. The words are also restricted to the searchable columns with an
explicit column filter.

Common English words (and ``user``, which nearly every memory contains) are
dropped when the query has other words: they add almost nothing to bm25 and
their long posting lists dominate the search cost.
"""

from __future__ import annotations

import unicodedata
from typing import Literal

MatchMode = Literal["any", "all"]

#: Characters of the query that are looked at; the rest is ignored.
MAX_QUERY_CHARS = 4096
#: Distinct words used from one query.
MAX_QUERY_TERMS = 24

STOPWORDS = frozenset(
    [
        "a",
        "about",
        "above",
        "after",
        "again",
        "against",
        "all",
        "am",
        "an",
        "and",
        "any",
        "are",
        "as",
        "at",
        "be",
        "because",
        "been",
        "before",
        "being",
        "below",
        "between",
        "both",
        "but",
        "by",
        "can",
        "could",
        "did",
        "do",
        "does",
        "doing",
        "down",
        "during",
        "each",
        "few",
        "for",
        "from",
        "further",
        "had",
        "has",
        "have",
        "having",
        "he",
        "her",
        "here",
        "hers",
        "herself",
        "him",
        "himself",
        "his",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "itself",
        "just",
        "me",
        "more",
        "most",
        "my",
        "myself",
        "no",
        "nor",
        "not",
        "now",
        "of",
        "off",
        "on",
        "once",
        "only",
        "or",
        "other",
        "our",
        "ours",
        "ourselves",
        "out",
        "over",
        "own",
        "same",
        "she",
        "should",
        "so",
        "some",
        "such",
        "than",
        "that",
        "the",
        "their",
        "theirs",
        "them",
        "themselves",
        "then",
        "there",
        "these",
        "they",
        "this",
        "those",
        "through",
        "to",
        "too",
        "under",
        "until",
        "up",
        "very",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "while",
        "who",
        "whom",
        "why",
        "will",
        "with",
        "would",
        "you",
        "your",
        "yours",
        "yourself",
        "yourselves",
        "s",
        "t",
        "d",
        "ll",
        "m",
        "re",
        "ve",
        "doesn",
        "didn",
        "isn",
        "wasn",
        "aren",
        "weren",
        "wouldn",
        "shouldn",
        "couldn",
        "also",
        "anything",
        "something",
        "everything",
        "thing",
        "things",
        "know",
        "tell",
        "remember",
        "recall",
        "please",
        "user",
        "users",
    ]
)


def _is_separator(ch: str) -> bool:
    """Characters the query is split on.

    Only characters that SQLite's unicode61 tokenizer (Unicode 6.1 tables)
    and Python agree are separators: ASCII other than letters and digits, and
    Unicode spaces and control characters. Everything else stays inside a
    word, because each word is sent as a quoted FTS5 string that FTS5
    tokenizes itself, exactly as it tokenized the stored text; splitting
    where FTS5 would not (combining marks, symbols newer than Unicode 6.1,
    which FTS5 treats as letters) would lose matches.
    """
    if ch < "\x80":
        return not ch.isalnum()
    cat = unicodedata.category(ch)
    return cat[0] == "Z" or cat == "Cc" or cat == "Cs"


def tokenize(text: str) -> list[str]:
    """Words of ``text`` (split on spaces and ASCII punctuation)."""
    words: list[str] = []
    buf: list[str] = []
    for ch in text[:MAX_QUERY_CHARS]:
        if _is_separator(ch):
            if buf:
                words.append("".join(buf))
                buf.clear()
        else:
            buf.append(ch)
    if buf:
        words.append("".join(buf))
    return words


def is_plain_ascii_word(word: str) -> bool:
    """True for words FTS5 and Python tokenize identically (ASCII letters/digits)."""
    return word.isascii() and word.isalnum()


def query_terms(query: str, max_terms: int = MAX_QUERY_TERMS) -> list[str]:
    """Distinct words of ``query`` in order, stopwords dropped when others remain.

    A word needs at least one letter or digit. Words keep their original
    case (FTS5 folds case and diacritics itself); duplicates are detected
    case-insensitively.
    """
    seen: set[str] = set()
    words: list[str] = []
    for w in tokenize(query or ""):
        if not any(ch.isalnum() for ch in w):
            # "¿", "…", "😀": FTS5 would (mostly) index nothing for these, and
            # an empty phrase would make an all-words search match nothing.
            continue
        key = w.lower()
        if key not in seen:
            seen.add(key)
            words.append(w)
    content = [w for w in words if w.lower() not in STOPWORDS]
    return (content or words)[:max_terms]


def quote_term(term: str) -> str:
    """One FTS5 string literal: ``"..."`` with embedded quotes doubled."""
    return '"' + term.replace('"', '""') + '"'


def build_match(
    terms: list[str],
    *,
    mode: MatchMode = "any",
    columns: tuple[str, ...] = ("text", "tags_text"),
    scope_column: str | None = None,
    scope_token: str | None = None,
) -> str | None:
    """FTS5 MATCH expression for ``terms`` or None when there is nothing to match.

    ``mode="any"``: OR of the words, so partial matches are found and bm25 puts
    memories matching more (and rarer) words first. ``mode="all"``: every word
    must occur. With ``scope_column``/``scope_token`` the expression is ANDed
    with that column's token, which confines the match to one scope inside
    the full-text index itself.
    """
    if not terms:
        return None
    joiner = " OR " if mode == "any" else " AND "
    body = joiner.join(quote_term(t) for t in terms)
    expr = "{" + " ".join(columns) + "} : (" + body + ")"
    if scope_column and scope_token:
        expr = f"{scope_column} : {quote_term(scope_token)} AND {expr}"
    return expr
