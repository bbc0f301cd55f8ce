from __future__ import annotations

import itertools

import pytest

from toolrelay.memory.scope import MAX_USER_CHARS, parse_scope, scope_for


def test_format() -> None:
    assert scope_for("key_123", None) == "k:key_123"
    assert scope_for("key_123", "alice") == "k:key_123/u:alice"
    assert scope_for(None, None) == "k:local"
    assert scope_for(None, "alice") == "k:local/u:alice"
    assert scope_for("", None) == "k:local"


def test_empty_user_is_the_key_scope() -> None:
    assert scope_for("key_1", "") == scope_for("key_1", None)


def test_separator_characters_are_encoded() -> None:
    assert scope_for("key_1", "x/u:y") == "k:key_1/u:x%2Fu%3Ay"
    assert scope_for("key_1", "100%") == "k:key_1/u:100%25"
    assert scope_for("a/u:b", None) == "k:a%2Fu%3Ab"


CRAFTED = [
    ("key_a", None),
    ("key_a", "bob"),
    ("key_a", "bob/u:eve"),
    ("key_a/u:bob", None),
    ("key_a", "/u:bob"),
    ("key_a%2Fu%3Abob", None),
    ("key_a", "%2F"),
    ("key_a", "/"),
    ("key_a", "k:key_b"),
    ("key_a", "../k:key_b"),
    ("key_b", None),
    ("key_b", "key_a"),
    ("key", "a/u:bob"),
    ("key_a", "#" + "0" * 64),
    ("key_a", "x" * (MAX_USER_CHARS + 1)),
    ("key_a", "x" * (MAX_USER_CHARS + 2)),
    ("local", None),
    (None, "key_a"),
    ("key_a", "bob\x00"),
    ("key_a", "BOB"),
    ("key_a", "b\u00f6b"),
    ("key_a", "bo\u0308b"),
]


def test_crafted_pairs_never_collide() -> None:
    seen: dict[str, tuple[str | None, str | None]] = {}
    for key, user in CRAFTED:
        s = scope_for(key, user)
        assert s not in seen, f"{(key, user)} collides with {seen[s]}"
        seen[s] = (key, user)


@pytest.mark.parametrize(("key", "user"), [p for p in CRAFTED if p[1] is None or len(p[1]) <= MAX_USER_CHARS])
def test_parse_roundtrip(key: str | None, user: str | None) -> None:
    got_key, got_user = parse_scope(scope_for(key, user))
    assert got_key == (key or "local")
    assert got_user == (user or None)


def test_long_user_is_hashed_and_bounded() -> None:
    s = scope_for("key_a", "u" * 10_000)
    assert s.startswith("k:key_a/u#")
    assert len(s) < 100
    assert s != scope_for("key_a", "u" * 10_001)
    # the hashed form can never be spelled by a literal user
    literal = s.split("/", 1)[1]
    assert scope_for("key_a", literal) != s


def test_scope_of_one_key_is_never_a_prefix_match_of_anothers_user() -> None:
    # "k:key_a" vs "k:key_a/u:x": different strings; the store compares with '='.
    for a, b in itertools.permutations(["key_a", "key_ab", "key_a/"], 2):
        assert scope_for(a, None) != scope_for(b, None)


def test_parse_rejects_garbage() -> None:
    for bad in ["", "key_a", "k:a/x:b"]:
        with pytest.raises(ValueError):
            parse_scope(bad)
