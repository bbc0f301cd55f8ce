"""What an API key looks like, and how it is checked without storing it.

A key is ``tr-<id>-<secret>``: ``id`` is 12 lowercase hex characters, public
(it names the key in logs, the ledger and the admin API); ``secret`` is 32
random bytes in URL-safe base64 (43 characters). Only SHA-256 of the whole
key is stored: a slow password hash buys nothing for 256 random bits, and
SHA-256 keeps the check in the microseconds. Comparison is constant-time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from toolrelay.app.ids import new_key_id

PREFIX = "tr-"
ID_CHARS = 12
SECRET_BYTES = 32
SECRET_CHARS = 43  # len(urlsafe_b64encode(32 bytes)) without padding
KEY_CHARS = len(PREFIX) + ID_CHARS + 1 + SECRET_CHARS
_HEX = frozenset("0123456789abcdef")
_B64 = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def new_key(key_id: str | None = None) -> tuple[str, str]:
    """(key id, full key). The full key is shown once and never stored."""
    key_id = key_id or new_key_id()
    secret = base64.urlsafe_b64encode(secrets.token_bytes(SECRET_BYTES)).rstrip(b"=").decode()
    return key_id, f"{PREFIX}{key_id}-{secret}"


def parse_key_id(key: str) -> str | None:
    """The id inside a well-formed key, else None (cheap checks only: length and alphabet)."""
    if len(key) != KEY_CHARS or not key.startswith(PREFIX) or key[len(PREFIX) + ID_CHARS] != "-":
        return None
    key_id = key[len(PREFIX) : len(PREFIX) + ID_CHARS]
    if not _HEX.issuperset(key_id) or not _B64.issuperset(key[len(PREFIX) + ID_CHARS + 1 :]):
        return None
    return key_id


def hash_key(key: str) -> bytes:
    return hashlib.sha256(key.encode("ascii", "surrogateescape")).digest()


def matches(key: str, stored_hash: bytes) -> bool:
    return hmac.compare_digest(hash_key(key), stored_hash)


def last4(key: str) -> str:
    return key[-4:]


def redacted(key_id: str, tail: str) -> str:
    """How listings show a key: its public part and the last four characters of the secret."""
    return f"{PREFIX}{key_id}-...{tail}"


def mask(presented: str) -> str:
    """A presented (possibly wrong, possibly huge) credential, safe to echo in an error.

    Shows at most 5 leading and 2 trailing characters, like OpenAI's
    ``sk-ab***xy``, so a pasted secret never comes back whole.
    """
    text = "".join(c if c.isprintable() and c.isascii() else "?" for c in presented[:5] + presented[-2:])
    if len(presented) < 12:
        return "***"
    return f"{text[:5]}***{text[5:]}"
