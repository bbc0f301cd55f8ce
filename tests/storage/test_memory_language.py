"""``[memory] language`` on PostgreSQL: the stemmer memory search uses, over HTTP and through ``toolrelay db copy``.

PostgreSQL 15's Snowball stemmers, checked with ``ts_lexize``: German stems
"Häuser" (folded to "hauser") and "Haus" alike to ``haus`` and leaves
"running" alone; English stems "running" to ``run`` and keeps ``hauser``.
So a search for "Haus" finds a memory about "Häuser" in German only, and
"run" finds "running" in English only. A host started with another language
rebuilds every vector, so the same memories answer the other way afterwards.
"""

from __future__ import annotations

import argparse
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from fakes.clients import rest
from fakes.server import RunningServer, relay_config
from fakes.upstream import FakeUpstream
from toolrelay.app.db_copy import cmd_db_copy
from toolrelay.memory.scope import scope_for
from toolrelay.memory.sync_store import SyncMemoryStore

HOUSES = "Die Häuser am See sind alt"
RUNNING = "I was running late for the train"


def _search(http: httpx.Client, q: str) -> list[str]:
    response = http.get("/v1/memories/search", params={"q": q})
    assert response.status_code == 200, response.text
    return [m["text"] for m in response.json()["data"]]


def _host(relay_factory: Callable[..., RunningServer], fake: FakeUpstream, data_dir: Path, url: str, language: str | None) -> RunningServer:
    memory = {"language": language} if language else None
    return relay_factory(tree=relay_config(fake.base_url, data_dir, database={"url": url}, memory=memory))


def _language(url: str) -> str:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT language FROM memories_language").fetchone()
    assert row is not None
    return str(row[0])


def test_the_language_setting_changes_stemming_and_a_change_rebuilds_the_index(
    relay_factory: Callable[..., RunningServer], fake: FakeUpstream, tmp_path: Path, postgres_url: str
) -> None:
    german = _host(relay_factory, fake, tmp_path / "de", postgres_url, "german")
    with rest(german) as http:
        for text in (HOUSES, RUNNING):
            assert http.post("/v1/memories", json={"text": text}).status_code == 200
        assert _search(http, "Haus") == [HOUSES]
        assert _search(http, "run") == []
    assert _language(postgres_url) == "german"
    german.stop()

    # The default (English) on the same database: every vector rebuilt at start-up.
    english = _host(relay_factory, fake, tmp_path / "en", postgres_url, None)
    with rest(english) as http:
        assert _search(http, "Haus") == []
        assert _search(http, "run") == [RUNNING]
        assert _search(http, "Häuser") == [HOUSES]
    assert _language(postgres_url) == "english"


@pytest.mark.parametrize(("language", "query", "found"), [("german", "Kind", True), ("english", "Kind", False), ("simple", "spielen", True)])
def test_db_copy_indexes_memories_in_the_configured_language(tmp_path: Path, postgres_url: str, language: str, query: str, found: bool) -> None:
    from toolrelay.app.postgres import open_pool
    from toolrelay.memory.pg_store import PgMemoryStore

    scope = scope_for("key_1", None)
    with SyncMemoryStore(tmp_path / "memory.db") as source:
        kept = source.save(scope, "Die Kinder spielen im Garten")
    config = tmp_path / "toolrelay.toml"
    config.write_text(f'[memory]\nlanguage = "{language}"\n')
    out = io.StringIO()
    args: Any = argparse.Namespace(source=str(tmp_path / "memory.db"), target=postgres_url, host=None, config=str(config))
    assert cmd_db_copy(args, out=out) == 0, out.getvalue()
    assert _language(postgres_url) == language

    pool = open_pool(postgres_url, max_size=2, name="test-memory-language")
    try:
        store = PgMemoryStore(pool, language=language)
        hits = store.search(scope, query)
        assert [(h.memory.id, h.memory.created_at) for h in hits] == ([(kept.id, kept.created_at)] if found else [])
        assert store.search(scope_for("key_2", None), "Garten") == []
    finally:
        pool.close()


def test_an_unknown_language_is_refused_before_anything_is_copied(tmp_path: Path, postgres_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    with SyncMemoryStore(tmp_path / "memory.db") as source:
        source.save(scope_for("key_1", None), "kept")
    config = tmp_path / "toolrelay.toml"
    config.write_text('[memory]\nlanguage = "klingon"\n')
    args: Any = argparse.Namespace(source=str(tmp_path), target=postgres_url, host=None, config=str(config))
    assert cmd_db_copy(args, out=io.StringIO()) == 2
    assert "memory.language" in capsys.readouterr().err
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT to_regclass('memories')").fetchone() == (None,)
