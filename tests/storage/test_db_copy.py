"""``toolrelay db copy``: a one-host installation, populated through a real toolrelay over HTTP, moved to PostgreSQL.

The SQLite data directory gets keys (one revoked), ledger rows, a stored
response, a paused agent run and memories in two scopes (one tagged, one
with metadata); after the copy the row counts and contents match table by
table, a second copy is refused, and a toolrelay on the PostgreSQL URL (a
fresh data directory) serves them: the key works and the revoked one does
not, the response is retrieved and continued, the paused run resumes with
its hidden step, the memories are found by search in their own scope only,
with the same ids, and the old requests are in its usage.
"""

from __future__ import annotations

import argparse
import io
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import openai
import psycopg
import pytest

from fakes.admin import Admin
from fakes.clients import rest, sdk
from fakes.relays import RelayPool, auth_tree
from fakes.upstream import FakeUpstream, Reply
from toolrelay.app.db_copy import cmd_db_copy
from toolrelay.memory.scope import scope_for
from toolrelay.memory.sync_store import SyncMemoryStore

WEATHER: Any = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}
QUESTION: Any = {"role": "user", "content": "Weather in Oslo?"}
AGENT = {"builtin_tools": ["current_time"]}


def _sqlite_rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return [tuple(bytes(v) if isinstance(v, (bytes, memoryview)) else v for v in row) for row in conn.execute(sql)]
    finally:
        conn.close()


def _pg_rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return [tuple(bytes(v) if isinstance(v, (bytes, memoryview)) else v for v in row) for row in conn.execute(sql)]  # pyright: ignore[reportArgumentType]


def _copy(source: Path, url: str, config: Path | None = None) -> tuple[int, str]:
    out = io.StringIO()
    code = cmd_db_copy(argparse.Namespace(source=f"sqlite:///{source}", target=url, host="old-host", config=config), out=out)
    return code, out.getvalue()


def _search(http: httpx.Client, q: str, user: str | None = None) -> list[dict[str, Any]]:
    response = http.get("/v1/memories/search", params={"q": q, **({"user": user} if user else {})})
    assert response.status_code == 200, response.text
    return response.json()["data"]


def _save(http: httpx.Client, text: str, user: str | None = None, tags: list[str] | None = None) -> dict[str, Any]:
    response = http.post("/v1/memories", params={"user": user} if user else {}, json={"text": text, **({"tags": tags} if tags else {})})
    assert response.status_code == 200, response.text
    return response.json()


def test_a_populated_installation_moves_to_postgres_whole(
    tmp_path: Path, fake_upstream: FakeUpstream, postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = fake_upstream
    fake.reset()
    old_dir = tmp_path / "old"
    with RelayPool(tmp_path / "one") as pool:
        relay = pool.start(auth_tree(fake, old_dir, agent=AGENT, cache={"enabled": True}))
        with Admin(relay) as admin:
            key_id, key = admin.create_key("kept", rpm=100)
            gone_id, gone = admin.create_key("revoked")
            admin.revoke(gone_id)
            fake.enqueue(
                Reply(content="Paris."),
                Reply(tool_calls=[{"name": "current_time", "arguments": {}}]),
                Reply(tool_calls=[{"name": "get_weather", "arguments": {"city": "Oslo"}}]),
                Reply(content="Answered once."),
            )
            with sdk(relay, key) as client:
                stored = client.responses.create(model="fake-model", input="Capital of France?")
                paused = client.chat.completions.create(model="agent/fake-model", messages=[QUESTION], tools=[WEATHER])
                # Asked twice at temperature 0: the second answer is the response cache's, booked with cache_hit.
                for _ in range(2):
                    answer = client.chat.completions.with_raw_response.create(model="fake-model", messages=[QUESTION], temperature=0)
                    assert answer.parse().choices[0].message.content == "Answered once."
                assert answer.headers["x-toolrelay-cache"] == "hit"
            assert paused.choices[0].finish_reason == "tool_calls"
            with rest(relay, key) as http:
                own = _save(http, "The staging database runs PostgreSQL 15", tags=["infra", "Databases"])
                ann = _save(http, "Ann takes the database minutes on Fridays", user="ann")
                _save(http, "Ann prefers window seats", user="ann")
            admin.usage_rows(key_id, count=5)
    # Stopped: the ledger is flushed, the files are still. One memory with metadata (only imports set it).
    with SyncMemoryStore(old_dir / "memory.db") as memories:
        noted = memories.save(scope_for(key_id, None), "Deploys happen on Tuesdays", tags=["ops"], metadata={"source": "wiki", "ü": [1, 2.5]})

    code, printed = _copy(old_dir, postgres_url)
    assert code == 0, (printed, capsys.readouterr().err)
    for part in ("keys", "ledger", "continuations", "responses", "memory"):
        assert part in printed

    # Table by table: the same rows.
    key_columns = "id, name, key_hash, tail, models, rpm, tpm, max_parallel, budget_usd, budget_period, expires_at, created_at, revoked_at"
    assert _pg_rows(postgres_url, f"SELECT {key_columns} FROM api_keys ORDER BY id") == _sqlite_rows(
        old_dir / "keys.db", f"SELECT {key_columns} FROM api_keys ORDER BY id"
    )
    usage = "ts, request_id, key_id, model, mode, status, prompt_tokens, completion_tokens, cost_nano, estimated, cache_hit"
    old_usage = _sqlite_rows(old_dir / "usage.db", f"SELECT {usage} FROM usage ORDER BY id")
    assert len(old_usage) >= 2 and _pg_rows(postgres_url, f"SELECT {usage} FROM usage ORDER BY id") == old_usage
    assert [row[-1] for row in old_usage].count(1) == 1  # the cache hit came along as one
    assert {row[0] for row in _pg_rows(postgres_url, "SELECT host FROM usage")} == {"old-host"}
    responses = "scope, id, created_at, response, input_items, context"
    old_responses = _sqlite_rows(old_dir / "responses.db", f"SELECT {responses} FROM responses ORDER BY id")
    assert len(old_responses) == 1 and _pg_rows(postgres_url, f"SELECT {responses} FROM responses ORDER BY id") == old_responses
    items = "SELECT scope, item_id, response_id FROM response_items ORDER BY item_id"
    assert _pg_rows(postgres_url, items) == _sqlite_rows(old_dir / "responses.db", items)
    runs = "SELECT run_key, scope, expires_at, messages, meta FROM continuations ORDER BY run_key"
    assert len(_sqlite_rows(old_dir / "agent.db", runs)) == 1 and _pg_rows(postgres_url, runs) == _sqlite_rows(old_dir / "agent.db", runs)
    calls = "SELECT scope, call_id, run_key FROM paused_calls ORDER BY call_id"
    assert _pg_rows(postgres_url, calls) == _sqlite_rows(old_dir / "agent.db", calls)
    # Memories in insertion order with every column (text is BYTEA there), and the caps' usage rows the same.
    memory_columns = "SELECT id, scope, text, tags, created_at, metadata FROM memories ORDER BY seq"
    old_memories = [(i, s, t.encode(), *rest) for i, s, t, *rest in _sqlite_rows(old_dir / "memory.db", memory_columns)]
    assert len(old_memories) == 4 and _pg_rows(postgres_url, memory_columns) == old_memories
    assert [row[0] for row in old_memories] == sorted(row[0] for row in old_memories)
    usage_rows = "SELECT owner, n, bytes FROM {} WHERE n > 0 ORDER BY owner"
    old_memory_usage = _sqlite_rows(old_dir / "memory.db", usage_rows.format("memory_usage"))
    assert len(old_memory_usage) == 3 and _pg_rows(postgres_url, usage_rows.format("memories_usage")) == old_memory_usage

    # Twice would double the ledger: refused, nothing written.
    code, _ = _copy(old_dir, postgres_url)
    assert code == 2 and "already holds" in capsys.readouterr().err
    assert len(_pg_rows(postgres_url, "SELECT id FROM usage")) == len(old_usage)

    # A toolrelay on the database (a fresh data directory) serves what the old one had.
    fake.reset()
    with RelayPool(tmp_path / "two") as pool:
        relay = pool.start(auth_tree(fake, tmp_path / "new", agent=AGENT, database={"url": postgres_url}))
        with sdk(relay, gone) as refused, pytest.raises(openai.AuthenticationError):
            refused.models.list()
        fake.enqueue(Reply(content="About two million."), Reply(content="Cold in Oslo."))
        with sdk(relay, key) as client:
            assert client.responses.retrieve(stored.id).output_text == "Paris."
            follow = client.responses.create(model="fake-model", input="How many people?", previous_response_id=stored.id)
            assert follow.output_text == "About two million."
            assert fake.chat_requests[-1].body["messages"][1] == {"role": "assistant", "content": "Paris."}
            [call] = paused.choices[0].message.tool_calls or []
            resumed = client.chat.completions.create(
                model="agent/fake-model",
                messages=[QUESTION, paused.choices[0].message.model_dump(exclude_none=True), {"role": "tool", "tool_call_id": call.id, "content": "-3 C"}],  # pyright: ignore[reportArgumentType]
                tools=[WEATHER],
            )
            assert resumed.choices[0].message.content == "Cold in Oslo."
            sent = [m for m in fake.chat_requests[-1].body["messages"] if m["role"] != "system"]
            assert [m["role"] for m in sent] == ["user", "assistant", "tool", "assistant", "tool"]  # the hidden current_time step came along
        with rest(relay, key) as http:
            # Found by search with the same ids, each in its own scope only; tags and metadata came along.
            assert [(m["id"], m["tags"]) for m in _search(http, "database")] == [(own["id"], own["tags"])] and own["tags"] == ["infra", "databases"]
            assert [m["id"] for m in _search(http, "databases")] == [own["id"]]
            assert [m["id"] for m in _search(http, "database", user="ann")] == [ann["id"]]
            assert [m["text"] for m in _search(http, "window seats", user="ann")] == ["Ann prefers window seats"]
            assert _search(http, "database", user="bob") == [] and _search(http, "window") == []
            [found] = _search(http, "tuesdays deploy")
            assert (found["id"], found["metadata"], found["created_at"]) == (noted.id, {"source": "wiki", "ü": [1, 2.5]}, noted.created_at)
            assert http.get("/v1/memories", params={"user": "ann"}).json()["data"][0]["created_at"] == ann["created_at"]
            # The caps count what was copied: a new memory lands on top of the copied ones.
            _save(http, "Ann's third memory", user="ann")
        assert _pg_rows(postgres_url, f"SELECT n FROM memories_usage WHERE owner = 's:{scope_for(key_id, 'ann')}'") == [(3,)]
        with Admin(relay) as admin:
            rows = admin.usage_rows(key_id, count=len(old_usage) + 2)
            assert {row["request_id"] for row in rows} >= {row[1] for row in old_usage}
        assert httpx.get(relay.url("/v1/models"), headers={"authorization": f"Bearer {key}"}, timeout=10).status_code == 200


@pytest.mark.parametrize(
    ("location", "relative"),
    [("sqlite:///{root}", "."), ("sqlite:////{root}", "."), ("{root}", "."), ("sqlite:///{root}/keys.db", "keys.db"), ("{root}/keys.db", "keys.db")],
)
def test_the_source_is_a_data_directory_or_one_file(tmp_path: Path, location: str, relative: str) -> None:
    from toolrelay.app.db_copy import sqlite_source

    for name in ("keys.db", "usage.db"):
        sqlite3.connect(tmp_path / name).close()
    (tmp_path / "notes.txt").write_text("not a database")
    found = sqlite_source(location.format(root=str(tmp_path).lstrip("/") if location.startswith("sqlite:") else tmp_path))
    expected = [tmp_path / "keys.db", tmp_path / "usage.db"] if relative == "." else [tmp_path / relative]
    assert found == expected


def test_a_missing_source_or_a_non_postgres_target_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cmd_db_copy(argparse.Namespace(source=str(tmp_path), target="sqlite:///x", host=None)) == 2
    assert "postgresql://" in capsys.readouterr().err
    from toolrelay.app.db_copy import CopyError, sqlite_source

    with pytest.raises(CopyError):
        sqlite_source(str(tmp_path / "absent"))


def test_the_command_line_reaches_the_copy() -> None:
    from toolrelay.app.cli import build_parser

    args = build_parser().parse_args(["db", "copy", "--from", "sqlite:///var/lib/toolrelay", "--to", "postgresql://db/toolrelay"])
    assert args.func is cmd_db_copy and args.source == "sqlite:///var/lib/toolrelay" and args.target == "postgresql://db/toolrelay"


def test_a_usage_db_from_before_the_cache_hit_column_copies_as_misses(tmp_path: Path, postgres_url: str) -> None:
    from toolrelay.app.auth.ledger import SCHEMA

    old = tmp_path / "usage.db"
    with sqlite3.connect(old) as conn:
        conn.executescript(SCHEMA)  # the first version's table: no cache_hit
        conn.execute("INSERT INTO usage (ts, request_id, key_id, model, mode, status, prompt_tokens) VALUES (1.5, 'req_old', 'k1', 'm', 'proxy', 200, 7)")
    conn.close()
    code, printed = _copy(old, postgres_url)
    assert code == 0, printed
    assert _pg_rows(postgres_url, "SELECT request_id, prompt_tokens, cache_hit, host FROM usage") == [("req_old", 7, 0, "old-host")]
