"""The memory scope string: whose long-term memory a request addresses.

A scope is the API key's id and, within it, the request's ``user`` field when
one is given. With auth off the key id is ``"local"``.

Format (both parts percent-encoded with :func:`urllib.parse.quote`, ``safe=""``)::

    k:<key_id>             the key's own memory (no ``user`` in the request)
    k:<key_id>/u:<user>    one end user of that key

Percent-encoding leaves no raw ``/``, ``:``, ``#`` or ``%`` inside a part, so
the mapping ``(key_id, user) -> scope`` is injective: no crafted ``user``
(``"x/u:y"``, ``"../k:other"``, ``"%2F"`` ...) can produce another key's or
another user's scope. A ``user`` longer than :data:`MAX_USER_CHARS` encoded
characters is replaced by ``u#<sha256 hex>``; ``#`` never survives encoding, so
a literal user can never spell a hashed one.
"""

from __future__ import annotations

import hashlib
from urllib.parse import quote, unquote

LOCAL_KEY_ID = "local"
MAX_USER_CHARS = 256


def _enc(part: str) -> str:
    return quote(part, safe="", encoding="utf-8", errors="surrogatepass")


def scope_for(key_id: str | None, user: str | None) -> str:
    """The scope string for API key ``key_id`` (None: auth off) and ``user``.

    An empty ``user`` is the same as none: the key's own scope.
    """
    key = key_id if key_id else LOCAL_KEY_ID
    scope = "k:" + _enc(key)
    if user:
        enc = _enc(user)
        if len(enc) > MAX_USER_CHARS:
            digest = hashlib.sha256(user.encode("utf-8", "surrogatepass")).hexdigest()
            return f"{scope}/u#{digest}"
        scope += "/u:" + enc
    return scope


def parse_scope(scope: str) -> tuple[str, str | None]:
    """Inverse of :func:`scope_for` (a hashed user comes back as ``"#<hex>"``).

    For logs and admin views only; raises ``ValueError`` on a malformed scope.
    """
    if not scope.startswith("k:"):
        raise ValueError(f"not a memory scope: {scope!r}")
    key_part, sep, user_part = scope[2:].partition("/")
    key = unquote(key_part)
    if not sep:
        return key, None
    if user_part.startswith("u:"):
        return key, unquote(user_part[2:])
    if user_part.startswith("u#"):
        return key, "#" + user_part[2:]
    raise ValueError(f"not a memory scope: {scope!r}")


def scope_token(scope: str) -> str:
    """The scope as one full-text token: 128 bits of SHA-256 in decimal.

    Digits only, so neither unicode61 nor the porter stemmer alters it. It is
    stored in every row (``scope_key``) so a search can confine FTS5's
    ranking to one scope inside the full-text index itself.
    """
    return str(int.from_bytes(hashlib.sha256(scope.encode("utf-8", "surrogatepass")).digest()[:16], "big"))
