"""Memory search on PostgreSQL is planned for its own words and scope every time, never from a prepared generic plan.

psycopg prepares a statement after five runs, and PostgreSQL then reuses one
plan for any values: for a search that plan reads the whole scope index
(100k rows in bench/memory_search.py) where the plan for the actual words
reads only their matching rows; p99 went from 34.6 to 5.1 ms when search
statements stopped being prepared.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from toolrelay.app.postgres import open_pool
from toolrelay.memory.pg_store import PgMemoryStore
from toolrelay.memory.scope import scope_for

WORDS = ["bagels", "salmon", "kayaking", "pottery", "lyon", "osaka", "tofu", "chess"]


@pytest.fixture
def one_connection(postgres_url: str) -> Iterator[Any]:
    """A pool of exactly one connection: every statement of the store runs on it, so its prepared statements can be seen."""
    pool = open_pool(postgres_url, min_size=1, max_size=1)
    yield pool
    pool.close()


def _prepared(pool: Any) -> list[str]:
    with pool.connection() as conn:
        return [row[0] for row in conn.execute("SELECT statement FROM pg_prepared_statements")]


def test_search_statements_are_never_prepared(one_connection: Any) -> None:
    store = PgMemoryStore(one_connection)
    scope = scope_for("key_plans", None)
    pairs = zip(WORDS * 30, WORDS[3:] * 30 + WORDS[:3] * 30, strict=True)
    store.save_many(scope, [{"text": f"{a} and {b} on day {i}", "tags": ["food"] if i % 2 else ["work"]} for i, (a, b) in enumerate(pairs)])
    # Every search shape ten times over (one word, several words, tag filters, "all", tags alone): past psycopg's threshold of five.
    for _ in range(10):
        for word in WORDS:
            assert store.search(scope, word, limit=3)
            store.search(scope, f"{word} {WORDS[0]} pottery", limit=3, tags=["food"])
            store.search(scope, f"{word} day", limit=3, match="all")
        store.search(scope, "", tags=["work"])
        store.list(scope, limit=2)
    prepared = _prepared(one_connection)
    assert prepared, "psycopg stopped preparing statements: this test no longer sees what it checks"
    searches = [sql for sql in prepared if "@@" in sql or "tag_list &&" in sql]
    assert searches == []
