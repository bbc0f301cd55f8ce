"""Property-based tests (hypothesis): arbitrary text never errors or crosses scopes."""

from __future__ import annotations

import pytest

hypothesis = pytest.importorskip("hypothesis")

from hypothesis import HealthCheck, assume, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from toolrelay.memory import SyncMemoryStore, scope_for  # noqa: E402
from toolrelay.memory.query import build_match, query_terms  # noqa: E402
from toolrelay.memory.scope import scope_token  # noqa: E402

SETTINGS = settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

A = scope_for("key_a", "alice")
B = scope_for("key_a", "bob")

fts_syntax = st.sampled_from(
    [
        '"',
        "'",
        "*",
        "^",
        ":",
        "-",
        "+",
        "(",
        ")",
        "{",
        "}",
        "AND",
        "OR",
        "NOT",
        "NEAR",
        "NEAR(",
        ",",
        " ",
        "scope_key",
        "text",
        "tags_text",
        "rank",
        "rowid",
        scope_token(B),
        "\x00",
        "😀",
        "é",
        "\u0301",
    ]
)
queries = st.one_of(
    st.text(max_size=200),
    st.lists(st.one_of(fts_syntax, st.text(min_size=1, max_size=8)), max_size=30).map("".join),
    st.lists(st.one_of(fts_syntax, st.text(alphabet="abcdefxyz", min_size=1, max_size=5)), max_size=30).map(" ".join),
)


@pytest.fixture(scope="module")
def prop_store(tmp_path_factory):
    store = SyncMemoryStore(tmp_path_factory.mktemp("prop") / "memory.db")
    store.save_many(A, ["alpha beta gamma", "abc def", 'quotes "inside" here', "NEAR AND OR NOT", "x y z"])
    store.save_many(B, ["alpha beta gamma of bob", "abc def of bob", "secret xyz of bob"])
    yield store
    store.close()


@SETTINGS
@given(
    q=queries,
    match=st.sampled_from(["any", "all"]),
    tags=st.one_of(st.none(), st.lists(st.text(max_size=10), max_size=3)),
)
def test_any_query_is_safe_and_scoped(prop_store: SyncMemoryStore, q: str, match: str, tags) -> None:
    hits = prop_store.search(A, q, limit=20, tags=tags, match=match)
    assert all(h.memory.scope == A for h in hits)
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)


@SETTINGS
@given(q=queries)
def test_forget_never_touches_another_scope(prop_store: SyncMemoryStore, q: str) -> None:
    before = {m.id for m in prop_store.export(B)}
    c = scope_for("key_c", None)
    prop_store.save(c, "disposable alpha abc x")
    prop_store.forget(c, q, limit=100)
    prop_store.delete_all(c)
    assert {m.id for m in prop_store.export(B)} == before


@SETTINGS
@given(terms=st.lists(st.text(min_size=1, max_size=20), min_size=1, max_size=10), mode=st.sampled_from(["any", "all"]))
def test_built_expression_always_parses(prop_store: SyncMemoryStore, terms: list[str], mode: str) -> None:
    # Even terms that did not come from the tokenizer are quoted safely.
    terms = [t.replace("\x00", "") for t in terms]
    assume(all(terms))
    expr = build_match(terms, mode=mode, scope_column="scope_key", scope_token=scope_token(A))
    with prop_store._connection() as db:
        db.execute("SELECT count(*) FROM memories_fts WHERE memories_fts MATCH ?", (expr,)).fetchone()


def _indexed_tokens(store: SyncMemoryStore, mem_id: str) -> int:
    """How many tokens FTS5 itself indexed for the memory's text (the oracle)."""
    with store._connection() as db:
        db.execute("CREATE VIRTUAL TABLE IF NOT EXISTS temp.mem_vocab USING fts5vocab(main, memories_fts, 'instance')")
        seq = db.execute("SELECT seq FROM memories WHERE id = ?", (mem_id,)).fetchone()[0]
        return db.execute("SELECT count(*) FROM temp.mem_vocab WHERE doc = ? AND col = 'text'", (seq,)).fetchone()[0]


@SETTINGS
@given(
    text=st.one_of(
        st.text(min_size=1, max_size=300),
        st.lists(
            st.text(st.characters(categories=["L", "M", "N", "S", "P", "Zs"]), min_size=1, max_size=12),
            min_size=1,
            max_size=8,
        ).map(" ".join),
    )
)
def test_saved_text_round_trips_and_is_found_by_its_words(prop_store: SyncMemoryStore, text: str) -> None:
    assume(text.strip())
    c = scope_for("key_rt", None)
    mem = prop_store.save(c, text)
    try:
        assert prop_store.get(c, mem.id).text == text.strip()
        indexed = _indexed_tokens(prop_store, mem.id)
        terms = query_terms(text)
        any_hits = [h.memory.id for h in prop_store.search(c, text, limit=5)]
        all_hits = [h.memory.id for h in prop_store.search(c, text, limit=5, match="all")]
        if not indexed:
            assert any_hits == [] and all_hits == []
        if any(ch.isascii() and ch.isalnum() for ch in text):
            assert indexed and any_hits == [mem.id]
        if terms and all(any(ch.isascii() and ch.isalnum() for ch in t) for t in terms):
            assert all_hits == [mem.id]
        if indexed and terms:
            # letters beyond ASCII: FTS5 tokenizes the quoted words like the text
            assert any_hits == [mem.id]
    finally:
        prop_store.delete_all(c)


keys = st.one_of(st.none(), st.text(max_size=12))
users = st.one_of(st.none(), st.text(max_size=12), st.text(min_size=250, max_size=300))


@settings(max_examples=2000, deadline=None, database=None)
@given(k1=keys, u1=users, k2=keys, u2=users)
def test_scope_for_is_injective(k1, u1, k2, u2) -> None:
    norm = lambda k, u: (k or "local", u or None)  # noqa: E731  (documented equivalences)
    if norm(k1, u1) != norm(k2, u2):
        assert scope_for(k1, u1) != scope_for(k2, u2)
    else:
        assert scope_for(k1, u1) == scope_for(k2, u2)
