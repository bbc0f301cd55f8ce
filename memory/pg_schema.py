"""The memory tables on PostgreSQL and their migrations (schema name ``memory`` in ``toolrelay_schema``).

Layout (step 1):

``memories``
    ``seq BIGINT`` identity (insertion order), ``id`` (``mem_`` + 26 chars,
    unique, time-ordered), ``scope``, ``text`` as UTF-8 ``BYTEA`` (memories
    are stored verbatim, and PostgreSQL's ``TEXT`` cannot hold U+0000, which
    the SQLite store keeps), ``tags`` (the JSON array, as SQLite stores it),
    ``tag_list TEXT[]`` (the same tags, for the ``&&`` filter), ``created_at``
    (unix seconds), ``metadata`` (JSON text or NULL: kept byte for byte,
    which ``jsonb`` would not), ``size`` (the bytes the caps count) and
    ``vec``, the ``tsvector`` (text weight A, tags weight B). Indexes: ``(id)``
    unique, ``(scope, id)``, GIN on ``vec``.
``memories_usage``
    memories and bytes per owner: ``s:<scope>`` and ``o:<key part>`` (every
    scope of one API key), as in the SQLite store. Kept by the store's own
    write transactions (not row triggers: a 100k-row import would update the
    same two rows 200k times), which lock the owner rows first, so the caps
    hold across hosts.
``memories_language``
    the one text-search language the vectors were built with.

Text search: the configuration ``toolrelay_memory`` is the default parser
with a Snowball stemmer *without* a stopword list (the ``english`` built-in
drops stopwords from the index, so a memory "To be or not to be" would have
an empty vector; the store drops stopwords from queries instead, as the SQLite
store does). Language ``simple`` maps words to lower case only. The store
folds diacritics and ASCII punctuation in Python before PostgreSQL sees the
text (no ``unaccent`` extension needed, which a non-superuser may not be
allowed to create), so words split exactly where the query splits them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, LiteralString, cast, get_args

import psycopg

from toolrelay.app.postgres import Migration
from toolrelay.app.settings import MemoryLanguage

__all__ = ["LANGUAGES", "SCHEMA_NAME", "TS_CONFIG", "check_language", "migrations", "set_language"]

SCHEMA_NAME = "memory"
TS_CONFIG = "toolrelay_memory"
_STEM = "toolrelay_memory_stem"

#: Snowball stemmers PostgreSQL ships (``/usr/share/postgresql/*/tsearch_data`` is not needed for them), plus ``simple``;
#: declared once, as the type of the ``[memory] language`` setting.
LANGUAGES = frozenset(get_args(MemoryLanguage))

_WORD_TYPES = "asciiword, asciihword, hword_asciipart, word, hword, hword_part, numword, numhword, hword_numpart"

_TABLES = """
CREATE TABLE memories (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id TEXT NOT NULL,
    scope TEXT NOT NULL,
    text BYTEA NOT NULL,
    tags TEXT NOT NULL,
    tag_list TEXT[] NOT NULL,
    created_at BIGINT NOT NULL,
    metadata TEXT,
    size BIGINT NOT NULL,
    vec TSVECTOR NOT NULL
);
CREATE UNIQUE INDEX memories_id ON memories (id);
CREATE INDEX memories_scope_id ON memories (scope, id);
CREATE INDEX memories_vec ON memories USING GIN (vec);
CREATE TABLE memories_usage (
    owner TEXT PRIMARY KEY,
    n BIGINT NOT NULL,
    bytes BIGINT NOT NULL
);
CREATE TABLE memories_language (
    only_row BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (only_row),
    language TEXT NOT NULL
);
"""


def check_language(language: str) -> str:
    if language not in LANGUAGES:
        raise ValueError(f"unknown memory search language {language!r}; one of: {', '.join(sorted(LANGUAGES))}")
    return language


def _dictionary_sql(language: str) -> str:
    if language == "simple":
        return f"CREATE TEXT SEARCH DICTIONARY {_STEM} (TEMPLATE = simple)"
    # No StopWords: stopwords stay in the index (see the module docstring).
    return f"CREATE TEXT SEARCH DICTIONARY {_STEM} (TEMPLATE = snowball, Language = {language})"


def set_language(conn: psycopg.Connection[Any], language: str) -> None:
    """(Re)create the text-search configuration for ``language`` (vectors are rebuilt by the caller)."""
    check_language(language)  # an identifier from a fixed list, so it may be formatted into the DDL
    conn.execute(f"DROP TEXT SEARCH CONFIGURATION IF EXISTS {TS_CONFIG}")
    conn.execute(f"DROP TEXT SEARCH DICTIONARY IF EXISTS {_STEM}")
    conn.execute(cast("LiteralString", _dictionary_sql(language)))
    conn.execute(f"CREATE TEXT SEARCH CONFIGURATION {TS_CONFIG} (PARSER = default)")
    conn.execute(f"ALTER TEXT SEARCH CONFIGURATION {TS_CONFIG} ADD MAPPING FOR {_WORD_TYPES} WITH {_STEM}")
    conn.execute(
        "INSERT INTO memories_language (language) VALUES (%s) ON CONFLICT (only_row) DO UPDATE SET language = excluded.language",
        (language,),
    )


def _create(language: str) -> Migration:
    def step(conn: psycopg.Connection[Any]) -> None:
        conn.execute(_TABLES)
        set_language(conn, language)

    return step


def migrations(language: str = "english") -> Sequence[Migration]:
    """The steps of schema ``memory``; ``language`` applies to a database created by them."""
    if not re.fullmatch(r"[a-z]+", language):
        raise ValueError("language must be a lower-case word")
    check_language(language)
    return (_create(language),)
