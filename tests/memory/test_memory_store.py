from __future__ import annotations

import asyncio
import itertools
import logging
import re
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from toolrelay.memory import (
    Memory,
    MemoryHit,
    MemoryStore,
    MemoryStoreClosed,
    MemoryValidationError,
    SyncMemoryStore,
    new_memory_id,
    scope_for,
)
from toolrelay.memory.query import query_terms
from toolrelay.memory.schema import SCHEMA_VERSION
from toolrelay.memory.scope import scope_token

ID_RE = re.compile(r"^mem_[0-9a-hjkmnp-tv-z]{26}$")

FILLER = [
    "The weather in Lisbon was sunny all week",
    "Bought new running shoes for the marathon",
    "The quarterly report is due on Friday",
    "Likes jazz music, especially Coltrane",
    "Sister lives in Toronto with two kids",
    "Uses a standing desk at the office",
    "Learning Spanish on a language app",
    "Prefers window seats on long flights",
    "Allergic to penicillin",
    "The team standup is at 9:30 every day",
    "Drives an old blue Volvo station wagon",
    "Favourite film is Spirited Away",
    "Keeps a sourdough starter named Bubbles",
    "Works remotely on Mondays and Fridays",
    "Plays five-a-side football on Thursdays",
    "Planning to repaint the kitchen green",
    "Reads science fiction before bed",
    "Has a dentist appointment next month",
    "Grows tomatoes and basil on the balcony",
    "Birthday is in late September",
]


# ---------------------------------------------------------------------------
# basics


async def test_save_get_roundtrip(store: MemoryStore, scopes: dict[str, str]) -> None:
    before = int(time.time())
    mem = await store.save(scopes["key_a"], "  Prefers dark roast coffee  ", tags=["Food", " food ", "Prefs"], metadata={"source": "chat"})
    assert ID_RE.match(mem.id)
    assert mem.text == "Prefers dark roast coffee"
    assert mem.tags == ("food", "prefs")
    assert before <= mem.created_at <= int(time.time()) + 1
    assert mem.metadata == {"source": "chat"}
    got = await store.get(scopes["key_a"], mem.id)
    assert got == mem
    assert got.to_dict() == {
        "id": mem.id,
        "object": "memory",
        "text": "Prefers dark roast coffee",
        "tags": ["food", "prefs"],
        "created_at": mem.created_at,
        "metadata": {"source": "chat"},
    }
    assert await store.count(scopes["key_a"]) == 1


async def test_get_unknown_and_odd_ids(store: MemoryStore, scopes: dict[str, str]) -> None:
    await store.save(scopes["key_a"], "something")
    for bad in ["", "mem_", "mem_00000000000000000000000000", "' OR 1=1 --", "%", "*", "\x00"]:
        assert await store.get(scopes["key_a"], bad) is None
        assert await store.delete(scopes["key_a"], bad) is False
    assert await store.count(scopes["key_a"]) == 1


def test_ids_are_unique_and_time_ordered() -> None:
    ids = [new_memory_id() for _ in range(5000)]
    assert len(set(ids)) == 5000
    assert ids == sorted(ids)
    assert all(ID_RE.match(i) for i in ids)


@pytest.mark.parametrize(
    ("text", "tags", "metadata", "message"),
    [
        ("", None, None, "empty"),
        ("   \n\t ", None, None, "empty"),
        ("x" * 8193, None, None, "8193 bytes"),
        ("é" * 4097, None, None, "8194 bytes"),
        ("ok", ["t"] * 1 + [f"t{i}" for i in range(16)], None, "at most 16 tags"),
        ("ok", ["x" * 65], None, "at most 64"),
        ("ok", [1, 2], None, "strings"),
        ("ok", None, {"k": "v" * 5000}, "at most 4096"),
        ("ok", None, {"k": object()}, "JSON"),
        ("ok", None, ["not", "a", "dict"], "object"),
        (None, None, None, "string"),
        (123, None, None, "string"),
    ],
)
async def test_save_validation(store: MemoryStore, scopes: dict[str, str], text, tags, metadata, message) -> None:
    with pytest.raises(MemoryValidationError, match=message):
        await store.save(scopes["key_a"], text, tags, metadata)
    assert await store.count(scopes["key_a"]) == 0


async def test_text_size_limit_is_inclusive(store: MemoryStore, scopes: dict[str, str]) -> None:
    mem = await store.save(scopes["key_a"], "é" * 4096)  # exactly 8192 bytes
    assert len(mem.text.encode()) == 8192
    assert (await store.get(scopes["key_a"], mem.id)).text == "é" * 4096


@pytest.mark.parametrize("scope", ["", None, 5, "x" * 2049])
async def test_bad_scope_is_refused(store: MemoryStore, scope) -> None:
    with pytest.raises(MemoryValidationError):
        await store.save(scope, "text")
    with pytest.raises(MemoryValidationError):
        await store.search(scope, "text")


async def test_odd_texts_are_stored_verbatim_and_findable(store: MemoryStore, scopes: dict[str, str]) -> None:
    s = scopes["key_a"]
    texts = [
        'He said "don\'t" -- OR NEAR(this, that) AND *star* ^caret {col}: (x)',
        "Emoji 😀🔥 and CJK 日本語 and café crème brûlée",
        "NUL\x00inside and tabs\tand\nnewlines",
        "'; DROP TABLE memories; --",
    ]
    for t in texts:
        await store.save(s, t)
    assert [m.text for m in await store.export(s)] == texts
    assert (await store.search(s, "brulee"))[0].memory.text == texts[1]  # diacritics folded
    assert (await store.search(s, "CAFÉ"))[0].memory.text == texts[1]
    assert (await store.search(s, "NEAR"))[0].memory.text == texts[0]
    assert (await store.search(s, "drop table"))[0].memory.text == texts[3]
    assert (await store.search(s, "newlines"))[0].memory.text == texts[2]
    assert store.sync.integrity_check()


# ---------------------------------------------------------------------------
# isolation


@pytest.fixture
async def populated(store: MemoryStore, scopes: dict[str, str]) -> dict[str, list[Memory]]:
    out: dict[str, list[Memory]] = {}
    for name, scope in scopes.items():
        out[name] = [
            await store.save(scope, f"secret coffee recipe of {name}", tags=["secret", name]),
            await store.save(scope, f"{name} loves hiking in the alps", tags=["hobby"]),
            await store.save(scope, f"password hint for {name} is the dog", tags=["secret"]),
        ]
    return out


def _names(mems) -> set[str]:
    out = set()
    for m in mems:
        m = m.memory if isinstance(m, MemoryHit) else m
        out.add(m.scope)
    return out


async def test_isolation_reads(store: MemoryStore, scopes: dict[str, str], populated: dict[str, list[Memory]]) -> None:
    for name, scope in scopes.items():
        own_ids = {m.id for m in populated[name]}
        assert _names(await store.search(scope, "secret coffee recipe hiking password dog alps", limit=50)) == {scope}
        assert {h.memory.id for h in await store.search(scope, "secret coffee recipe hiking password dog", limit=50)} == own_ids
        assert {m.id for m in (await store.list(scope, limit=100)).data} == own_ids
        assert {m.id for m in await store.export(scope)} == own_ids
        assert await store.count(scope) == 3
        assert _names(await store.search(scope, "", tags=["secret"], limit=50)) == {scope}
        for other, mems in populated.items():
            if other == name:
                continue
            # other scopes' names as query words find nothing of theirs here
            assert all(h.memory.scope == scope for h in await store.search(scope, other, limit=50))
            for m in mems:
                assert await store.get(scope, m.id) is None


async def test_isolation_key_user_are_separate(store: MemoryStore, scopes: dict[str, str], populated) -> None:
    # The key's own scope does not see its users' memories, nor vice versa.
    key_hits = await store.search(scopes["key_a"], "alice bob", limit=20)
    assert key_hits == []
    assert [h.memory.scope for h in await store.search(scopes["alice"], "alice bob", limit=20)] == [scopes["alice"]] * 3


async def test_isolation_deletes(store: MemoryStore, scopes: dict[str, str], populated: dict[str, list[Memory]]) -> None:
    a, b = scopes["alice"], scopes["bob"]
    for m in populated["bob"] + populated["key_b"]:
        assert await store.delete(a, m.id) is False
        assert await store.pop(a, m.id) is None
    # forget in alice's scope with words that only bob's memories contain
    assert await store.forget(a, "bob", limit=20) == []
    assert await store.forget(a, "secret coffee recipe", limit=20) == [populated["alice"][0].id]
    assert await store.count(b) == 3
    assert await store.delete_all(a) == 2
    assert await store.count(a) == 0
    for name in ("key_a", "key_b", "bob"):
        assert await store.count(scopes[name]) == 3
        assert {m.id for m in await store.export(scopes[name])} == {m.id for m in populated[name]}
    assert await store.delete_all(a) == 0


@pytest.mark.parametrize(
    "template",
    [
        'scope_key:"{tok}"',
        "scope_key:{tok}",
        "scope_key : {tok} OR coffee",
        '{{scope_key text}}: "{tok}"',
        "{{scope_key}}: {tok}*",
        '" OR scope_key:"{tok}" OR "',
        "coffee) OR (scope_key:{tok}",
        "NEAR(scope_key:{tok} coffee)",
        "- scope_key:{tok}",
        "^scope_key:{tok}",
        "{tok}",
        "text:coffee OR scope:k",
        "scope:{scope}",
    ],
)
async def test_fts_column_filter_injection(store: MemoryStore, scopes: dict[str, str], populated, template: str) -> None:
    victim = scopes["key_b"]
    attacker = scopes["alice"]
    q = template.format(tok=scope_token(victim), scope=victim)
    for match in ("any", "all"):
        hits = await store.search(attacker, q, limit=100, match=match)
        assert all(h.memory.scope == attacker for h in hits)
    deleted = await store.forget(attacker, q, limit=100)
    assert set(deleted) <= {m.id for m in populated["alice"]}
    assert await store.count(victim) == 3
    assert {m.id for m in await store.export(victim)} == {m.id for m in populated["key_b"]}


async def test_scope_token_text_in_own_memory_does_not_reach_other_scope(store: MemoryStore, scopes) -> None:
    victim, attacker = scopes["key_b"], scopes["key_a"]
    await store.save(victim, "victim note about tulips")
    tok = scope_token(victim)
    await store.save(attacker, f"my note mentions {tok} and tulips")
    hits = await store.search(attacker, f"{tok} tulips", limit=10)
    assert [h.memory.scope for h in hits] == [attacker]
    assert [h.memory.text for h in await store.search(victim, f"{tok} tulips")] == ["victim note about tulips"]


async def test_list_cursor_from_another_scope_leaks_nothing(store: MemoryStore, scopes) -> None:
    a, b = scopes["key_a"], scopes["key_b"]
    mine = [await store.save(a, f"a{i}") for i in range(3)]
    theirs = await store.save(b, "b0")
    mine += [await store.save(a, f"a{i}") for i in range(3, 5)]
    page = await store.list(a, limit=10, after=theirs.id)
    assert [m.id for m in page.data] == [m.id for m in mine[3:]]
    assert all(m.scope == a for m in page.data)


# ---------------------------------------------------------------------------
# ranking and query handling


@pytest.fixture
async def corpus(store: MemoryStore, scopes: dict[str, str]) -> str:
    s = scopes["key_a"]
    await store.save_many(s, FILLER)
    return s


async def test_more_matching_words_rank_first(store: MemoryStore, corpus: str) -> None:
    one = await store.save(corpus, "Anna likes green tea")
    both = await store.save(corpus, "Anna's birthday party is on 3 May; she likes green tea")
    other = await store.save(corpus, "The party planning committee meets monthly")
    hits = await store.search(corpus, "Anna party", limit=5)
    assert [h.memory.id for h in hits[:3]] == [both.id, one.id, other.id]
    assert hits[0].score > hits[1].score > 0
    assert all(a.score >= b.score for a, b in itertools.pairwise(hits))


async def test_rare_word_outranks_common_word(store: MemoryStore, corpus: str) -> None:
    for i in range(8):
        await store.save(corpus, f"Meeting notes number {i} about the project")
    rare = await store.save(corpus, "The zeppelin museum visit was great")
    common = await store.save(corpus, "Another project meeting happened")
    hits = await store.search(corpus, "zeppelin project", limit=3)
    assert hits[0].memory.id == rare.id
    assert len(hits) == 3 and hits[0].score > hits[1].score
    assert common.id in {h.memory.id for h in await store.search(corpus, "zeppelin project", limit=20)}


async def test_stemming_matches_word_forms(store: MemoryStore, corpus: str) -> None:
    mem = await store.save(corpus, "She went swimming in three lakes this summer")
    hits = await store.search(corpus, "swims lake")
    assert [h.memory.id for h in hits] == [mem.id]


async def test_stopwords_do_not_drive_matches(store: MemoryStore, corpus: str) -> None:
    mem = await store.save(corpus, "Owns a kayak")
    hits = await store.search(corpus, "what is the kayak", limit=3)
    assert [h.memory.id for h in hits] == [mem.id]


async def test_only_stopwords_still_searches(store: MemoryStore, corpus: str) -> None:
    mem = await store.save(corpus, "To be or not to be")
    assert query_terms("to be or not") == ["to", "be", "or", "not"]
    hits = await store.search(corpus, "to be or not", limit=3)
    assert hits and hits[0].memory.id == mem.id


async def test_match_all(store: MemoryStore, corpus: str) -> None:
    a = await store.save(corpus, "red kite over the hill")
    await store.save(corpus, "red bicycle")
    hits = await store.search(corpus, "red kite", match="all", limit=10)
    assert [h.memory.id for h in hits] == [a.id]


NASTY = [
    "",
    " ",
    "\n\t",
    '"',
    '""',
    '"""',
    "'",
    "''",
    "*",
    "**",
    "^",
    ":",
    "::",
    "-",
    "--",
    "+",
    "(",
    ")",
    "()",
    "(((",
    ")))",
    "{",
    "}",
    "{}",
    "[]",
    "AND",
    "OR",
    "NOT",
    "and or not",
    "AND OR NOT NEAR",
    "NEAR(",
    "NEAR(a b, 10)",
    "NEAR(a b, -1)",
    "a NEAR/3 b",
    "coffee*",
    "*coffee",
    "^coffee",
    "co*ffee",
    "coffee:",
    ":coffee",
    "text:coffee",
    "tags_text:coffee",
    "scope_key:1",
    "{text}: coffee",
    "{text tags_text scope_key}: coffee",
    "memories_fts:coffee",
    "rank:1",
    "rowid:1",
    "-coffee",
    "coffee -tea",
    "coffee + tea",
    'coffee" OR "tea',
    'coffee"',
    '"coffee',
    "coffee AND",
    "AND coffee",
    "OR OR OR",
    "coffee OR",
    "(coffee OR tea",
    "coffee) AND (tea",
    "\\",
    '\\"',
    "%",
    "_",
    "%_%",
    "'; DROP TABLE memories; --",
    "1; SELECT * FROM memories",
    "\x00",
    "coffee\x00tea",
    "\x01\x02\x03",
    "\ud800",
    "😀",
    "😀🔥💩",
    "🧑‍💻 coffee",
    "café",
    "ﬁ ligature",
    "e\u0301",
    "\u0301",
    "日本語",
    "مرحبا",
    "שלום",
    "Ελληνικά",
    "x" * 10_000,
    "coffee " * 2_000,
    " ".join(f"w{i}" for i in range(500)),
    "a" * 300,
    "0",
    "-1",
    "1e309",
    "NaN",
    "null",
    "None",
    "<script>alert(1)</script>",
    "$(rm -rf /)",
    "%s %d %n",
    "{0}",
]


@pytest.mark.parametrize("query", NASTY, ids=[f"q{i}" for i in range(len(NASTY))])
async def test_nasty_queries_never_error(store: MemoryStore, corpus: str, scopes, query: str, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="toolrelay.memory.planner")
    await store.save(scopes["key_b"], "coffee and tea of key b")
    await store.save(corpus, "coffee and tea of key a", tags=["drinks"])
    for match in ("any", "all"):
        hits = await store.search(corpus, query, limit=5, match=match)
        assert isinstance(hits, list)
        assert all(h.memory.scope == corpus for h in hits)
        hits = await store.search(corpus, query, limit=5, tags=["drinks", query], match=match)
        assert all(h.memory.scope == corpus for h in hits)
    forgotten = await store.forget(corpus, query, limit=1)
    assert len(forgotten) <= 1
    assert await store.count(scopes["key_b"]) == 1
    # no query was rejected by FTS5 (a rejection is logged and answered with [])
    assert [r.getMessage() for r in caplog.records] == []


@pytest.mark.parametrize("word", ["AND", "OR", "NOT", "NEAR", "and", "near"])
async def test_fts_keywords_are_searchable_words(store: MemoryStore, corpus: str, word: str) -> None:
    mem = await store.save(corpus, "Notes on boolean logic: AND OR NOT NEAR operators")
    for q in (word, f"{word} {word}", f"logic {word}", f"{word} logic"):
        for match in ("any", "all"):
            hits = await store.search(corpus, q, limit=10, match=match)
            assert mem.id in [h.memory.id for h in hits], (q, match)


@pytest.mark.parametrize("query", ['coffee" OR "tea', "coffee*", "^coffee", "(coffee)", "coffee:", "-coffee"])
async def test_syntax_characters_are_plain_separators(store: MemoryStore, corpus: str, query: str) -> None:
    mem = await store.save(corpus, "Drinks coffee black")
    hits = await store.search(corpus, query, limit=3)
    assert hits and hits[0].memory.id == mem.id


async def test_empty_and_wordless_queries_return_nothing(store: MemoryStore, corpus: str) -> None:
    for q in ["", "   ", "😀", "!!!", "()"]:
        assert await store.search(corpus, q) == []
        assert await store.forget(corpus, q, limit=100) == []
    assert await store.count(corpus) == len(FILLER)


async def test_limit_is_clamped(store: MemoryStore, corpus: str) -> None:
    assert len(await store.search(corpus, "the", limit=0)) == 1
    assert len(await store.search(corpus, "the a in on is", limit=-5)) == 1
    assert len(await store.search(corpus, "the a in on is", limit=10**9)) <= 100
    assert len(await store.search(corpus, "the", limit="x")) <= 5  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# tags


async def test_tags_filter(store: MemoryStore, corpus: str) -> None:
    food = await store.save(corpus, "Likes spicy ramen", tags=["food"])
    travel = await store.save(corpus, "Ramen tour in Tokyo planned", tags=["travel", "Food Trips"])
    plain = await store.save(corpus, "Ramen shop closed on Mondays")
    ids = lambda hits: {h.memory.id for h in hits}  # noqa: E731
    assert ids(await store.search(corpus, "ramen", limit=10)) == {food.id, travel.id, plain.id}
    assert ids(await store.search(corpus, "ramen", limit=10, tags=["FOOD"])) == {food.id}
    assert ids(await store.search(corpus, "ramen", limit=10, tags=["food", "travel"])) == {food.id, travel.id}
    assert ids(await store.search(corpus, "ramen", limit=10, tags=["food  trips"])) == {travel.id}
    # a tag that is only a word of a multi-word tag does not match it
    assert ids(await store.search(corpus, "ramen", limit=10, tags=["trips"])) == set()
    assert ids(await store.search(corpus, "ramen", limit=10, tags=["nope"])) == set()
    # no query words: newest memories carrying the tags
    hits = await store.search(corpus, "", limit=10, tags=["food", "travel"])
    assert [h.memory.id for h in hits] == [travel.id, food.id]
    assert all(h.score == 0.0 for h in hits)
    # list filtered by tags
    assert [m.id for m in (await store.list(corpus, tags=["travel"])).data] == [travel.id]


async def test_tags_without_indexable_characters(store: MemoryStore, corpus: str) -> None:
    fire = await store.save(corpus, "Hot sauce collection", tags=["🔥"])
    await store.save(corpus, "Hot tea", tags=["🍵"])
    assert [h.memory.id for h in await store.search(corpus, "hot", tags=["🔥"])] == [fire.id]
    assert [h.memory.id for h in await store.search(corpus, "", tags=["🔥"])] == [fire.id]


async def test_tag_words_are_searchable(store: MemoryStore, corpus: str) -> None:
    mem = await store.save(corpus, "Dentist on Tuesday", tags=["health"])
    assert (await store.search(corpus, "health"))[0].memory.id == mem.id


# ---------------------------------------------------------------------------
# pagination, export, forget


async def test_pagination(store: MemoryStore, scopes) -> None:
    s = scopes["key_a"]
    mems = [await store.save(s, f"memory number {i}") for i in range(25)]
    await store.save(scopes["key_b"], "other scope")
    page1 = await store.list(s, limit=10)
    assert [m.id for m in page1.data] == [m.id for m in mems[:10]]
    assert page1.has_more and page1.first_id == mems[0].id and page1.last_id == mems[9].id
    page2 = await store.list(s, limit=10, after=page1.last_id)
    assert [m.id for m in page2.data] == [m.id for m in mems[10:20]] and page2.has_more
    page3 = await store.list(s, limit=10, after=page2.last_id)
    assert [m.id for m in page3.data] == [m.id for m in mems[20:]]
    assert not page3.has_more
    empty = await store.list(s, limit=10, after=page3.last_id)
    assert empty.data == [] and not empty.has_more and empty.first_id is None and empty.last_id is None
    d = page3.to_dict()
    assert d["object"] == "list" and d["has_more"] is False and d["last_id"] == mems[-1].id
    assert d["data"][0] == {
        "id": mems[20].id,
        "object": "memory",
        "text": "memory number 20",
        "tags": [],
        "created_at": mems[20].created_at,
    }
    # exactly one page: has_more is False
    assert not (await store.list(s, limit=25)).has_more
    assert (await store.list(s, limit=24)).has_more
    # newest first
    desc = await store.list(s, limit=5, order="desc")
    assert [m.id for m in desc.data] == [m.id for m in reversed(mems[-5:])]
    desc2 = await store.list(s, limit=5, order="desc", after=desc.last_id)
    assert [m.id for m in desc2.data] == [m.id for m in reversed(mems[-10:-5])]


async def test_cursor_survives_deletion(store: MemoryStore, scopes) -> None:
    s = scopes["key_a"]
    mems = [await store.save(s, f"m{i}") for i in range(6)]
    page = await store.list(s, limit=3)
    assert await store.delete(s, page.last_id)
    rest = await store.list(s, limit=10, after=page.last_id)
    assert [m.id for m in rest.data] == [m.id for m in mems[3:]]


async def test_list_limit_clamped(store: MemoryStore, scopes) -> None:
    s = scopes["key_a"]
    await store.save_many(s, [f"m{i}" for i in range(5)])
    assert len((await store.list(s, limit=0)).data) == 1
    assert len((await store.list(s, limit=10**6)).data) == 5


async def test_export_in_creation_order_and_large(store: MemoryStore, scopes) -> None:
    s = scopes["key_a"]
    saved = await store.save_many(s, [{"text": f"item {i}", "tags": ["bulk"]} for i in range(2500)])
    exported = await store.export(s)
    assert [m.id for m in exported] == [m.id for m in saved]
    assert exported[1234].text == "item 1234" and exported[1234].tags == ("bulk",)


async def test_save_many_is_all_or_nothing(store: MemoryStore, scopes) -> None:
    s = scopes["key_a"]
    with pytest.raises(MemoryValidationError, match="item 2"):
        await store.save_many(s, ["ok", {"text": "ok too"}, {"text": ""}])
    assert await store.count(s) == 0


async def test_forget_requires_every_word_and_respects_limit(store: MemoryStore, corpus: str) -> None:
    a = await store.save(corpus, "Old address: 12 Elm Street, Springfield")
    b = await store.save(corpus, "Elm Street bakery sells rye bread")
    c = await store.save(corpus, "Springfield office closes at 6")
    assert await store.forget(corpus, "Elm Street Springfield address", limit=5) == [a.id]
    assert await store.get(corpus, a.id) is None
    assert await store.get(corpus, b.id) is not None and await store.get(corpus, c.id) is not None
    d = await store.save(corpus, "Elm trees in the park")
    deleted = await store.forget(corpus, "elm", limit=1)
    assert len(deleted) == 1 and deleted[0] in {b.id, d.id}
    deleted_memories = await store.forget_memories(corpus, "elm", limit=5)
    assert {m.id for m in deleted_memories} | set(deleted) == {b.id, d.id}
    assert await store.count(corpus) == len(FILLER) + 1


async def test_pop_returns_the_memory(store: MemoryStore, scopes) -> None:
    s = scopes["key_a"]
    mem = await store.save(s, "to be popped", tags=["x"])
    assert await store.pop(s, mem.id) == mem
    assert await store.pop(s, mem.id) is None


# ---------------------------------------------------------------------------
# the file, threads, the event loop


def test_wal_and_persistence(db_path: Path, scopes) -> None:
    s = SyncMemoryStore(db_path)
    mem = s.save(scopes["key_a"], "persisted fact about gardening")
    s.close()
    with pytest.raises(MemoryStoreClosed):
        s.search(scopes["key_a"], "gardening")
    conn = sqlite3.connect(db_path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
    conn.close()
    s2 = SyncMemoryStore(db_path)
    assert s2.get(scopes["key_a"], mem.id) == mem
    assert s2.search(scopes["key_a"], "gardening")[0].memory == mem
    assert s2.count(scopes["key_a"]) == 1
    s2.close()


def test_counts_and_index_stay_consistent(sync_store: SyncMemoryStore, scopes) -> None:
    s = scopes["key_a"]
    ids = [m.id for m in sync_store.save_many(s, [f"fact {i} about apples" for i in range(300)])]
    for i in ids[::3]:
        assert sync_store.delete(s, i)
    sync_store.forget(s, "apples", limit=10)
    assert sync_store.count(s) == 300 - 100 - 10 == len(sync_store.export(s))
    assert sync_store.integrity_check()
    sync_store.delete_all(s)
    assert sync_store.count(s) == 0
    assert sync_store.search(s, "apples") == []
    assert sync_store.integrity_check()


def test_threads_read_and_write_concurrently(db_path: Path, scopes) -> None:
    store = SyncMemoryStore(db_path, max_connections=4)
    errors: list[BaseException] = []
    per_thread = 60

    def writer(n: int) -> None:
        try:
            scope = scope_for("key_a", f"user{n}")
            for i in range(per_thread):
                store.save(scope, f"thread {n} fact {i} about owls")
                assert all(h.memory.scope == scope for h in store.search(scope, "owls fact", limit=5))
        except BaseException as exc:  # noqa: BLE001  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for n in range(6):
        assert store.count(scope_for("key_a", f"user{n}")) == per_thread
    assert store.integrity_check()
    store.close()


def test_two_store_objects_on_one_file(db_path: Path, scopes) -> None:
    a = SyncMemoryStore(db_path)
    b = SyncMemoryStore(db_path)
    mem = a.save(scopes["key_a"], "shared file fact")
    assert b.get(scopes["key_a"], mem.id) == mem
    assert b.delete(scopes["key_a"], mem.id)
    assert a.get(scopes["key_a"], mem.id) is None
    a.close()
    b.close()


async def test_async_calls_do_not_block_the_event_loop(store: MemoryStore, scopes) -> None:
    ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0.001)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    ran_in: list[int] = []
    orig = store.sync.save_many

    def spy(*a, **kw):
        ran_in.append(threading.get_ident())
        return orig(*a, **kw)

    store.sync.save_many = spy  # type: ignore[method-assign]
    await store.save_many(scopes["key_a"], [f"bulk fact {i}" for i in range(20_000)])
    stop.set()
    await task
    assert ran_in and ran_in[0] != threading.get_ident()
    assert ticks >= 3
    results = await asyncio.gather(*(store.search(scopes["key_a"], f"fact {i}") for i in range(20)))
    assert all(len(r) == 5 for r in results)


async def test_open_in_a_thread_and_concurrent_async_calls(db_path: Path, scopes) -> None:
    store = await MemoryStore.open(db_path, max_concurrency=3)
    try:
        s = scopes["alice"]
        saved = await asyncio.gather(*(store.save(s, f"parallel fact {i} about lighthouses") for i in range(40)))
        assert len({m.id for m in saved}) == 40
        counts = await asyncio.gather(*(store.count(s) for _ in range(10)))
        assert counts == [40] * 10
        results = await asyncio.gather(*(store.search(s, "lighthouses", limit=50) for _ in range(10)))
        assert all(len(r) == 40 for r in results)
        assert await store.count(scopes["bob"]) == 0
    finally:
        await store.aclose()
    with pytest.raises(MemoryStoreClosed):
        await store.count(scopes["alice"])


# ---------------------------------------------------------------------------
# the search planner on a bigger database


@pytest.fixture(scope="module")
def big_db(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("big") / "memory.db"
    s = SyncMemoryStore(path)
    scope = scope_for("key_big", None)
    items = []
    for i in range(12_000):
        items.append(f"User note {i}: prefers tea in the morning and coffee at work, item {i % 97}")
    items[777] = "User note 777: the hidden narwhal figurine sits on the top shelf"
    items[9000] = "Narwhal documentary recommended by Sam"
    s.save_many(scope, items)
    s.save_many(scope_for("key_other", None), [f"other scope prefers tea {i}" for i in range(500)])
    s.close()
    return path


def test_planner_keeps_rare_words_first(big_db: Path) -> None:
    scope = scope_for("key_big", None)
    tight = SyncMemoryStore(big_db, search_budget_ms=0.5)
    exact = SyncMemoryStore(big_db, search_budget_ms=10_000)
    try:
        q = "narwhal prefers tea morning"
        t_hits = tight.search(scope, q, limit=5)
        e_hits = exact.search(scope, q, limit=5)
        # both find the narwhal memories first
        assert (
            {h.memory.text for h in t_hits[:2]}
            == {h.memory.text for h in e_hits[:2]}
            == {
                "User note 777: the hidden narwhal figurine sits on the top shelf",
                "Narwhal documentary recommended by Sam",
            }
        )
        # a query made only of very common words still answers, newest first, score 0
        common = tight.search(scope, "prefers tea morning", limit=3)
        assert [h.score for h in common] == [0.0, 0.0, 0.0]
        assert [h.memory.text for h in common] == [
            f"User note {i}: prefers tea in the morning and coffee at work, item {i % 97}" for i in (11999, 11998, 11997)
        ]
        # the exact store ranks them (positive scores)
        assert all(h.score > 0 for h in exact.search(scope, "prefers tea morning", limit=3))
        # planner never crosses scopes
        other = scope_for("key_other", None)
        for st in (tight, exact):
            assert all(h.memory.scope == other for h in st.search(other, "prefers tea narwhal", limit=50))
            assert all(h.memory.scope == scope for h in st.search(scope, "other scope prefers tea", limit=50))
    finally:
        tight.close()
        exact.close()


@pytest.mark.parametrize("strategy", ["auto", "match", "filter"])
def test_scope_strategies_agree(big_db: Path, strategy: str) -> None:
    scope = scope_for("key_big", None)
    other = scope_for("key_other", None)
    s = SyncMemoryStore(big_db, scope_strategy=strategy, search_budget_ms=10_000)
    ref = SyncMemoryStore(big_db, scope_strategy="match", search_budget_ms=10_000)
    try:
        for sc in (scope, other):
            for q in ["narwhal shelf", "item 42", "tea 17", "documentary Sam"]:
                got = [(h.memory.id, h.score) for h in s.search(sc, q, limit=7)]
                want = [(h.memory.id, h.score) for h in ref.search(sc, q, limit=7)]
                assert [g[1] for g in got] == [w[1] for w in want]
                assert {g[0] for g in got} <= {h.memory.id for h in ref.search(sc, q, limit=100)}
                assert all(h.memory.scope == sc for h in s.search(sc, q, limit=50))
    finally:
        s.close()
        ref.close()


def test_search_with_selective_tags_in_big_scope(big_db: Path, tmp_path: Path) -> None:
    scope = scope_for("key_big", None)
    s = SyncMemoryStore(big_db)
    try:
        assert s.search(scope, "prefers tea", tags=["nonexistent"], limit=5) == []
        mem = s.save(scope, "Tea ceremony booked", tags=["rare-tag"])
        hits = s.search(scope, "tea", tags=["rare-tag"], limit=5)
        assert [h.memory.id for h in hits] == [mem.id]
        assert s.delete(scope, mem.id)
    finally:
        s.close()


def test_schema_1_files_open_and_keep_their_counts(db_path: Path, scopes) -> None:
    """A file of the release before versioned migrations (schema 1, usage table present) opens as it is."""
    s = scopes["key_a"]
    with SyncMemoryStore(db_path) as old:
        old.save_many(s, ["one", "two", "three"])
        with old._write() as db:
            db.execute("PRAGMA user_version=1")
    with SyncMemoryStore(db_path) as store:
        assert store.count(s) == 3
        with store._connection() as db:
            assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
            usage = dict(db.execute("SELECT owner, n FROM memory_usage").fetchall())
        assert usage == {"s:" + s: 3, "o:" + s.split("/", 1)[0]: 3}  # not backfilled a second time


def test_a_file_newer_than_the_code_is_refused(db_path: Path) -> None:
    SyncMemoryStore(db_path).close()
    conn = sqlite3.connect(db_path)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(RuntimeError, match="newer than this code"):
        SyncMemoryStore(db_path)
