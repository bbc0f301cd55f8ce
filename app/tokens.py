"""Token estimates with tiktoken, working offline.

tiktoken downloads its vocabularies on first use, which fails on machines
without internet. The two vocabularies we need ship gzipped inside the
package; on first use they are unpacked into a cache directory under the
names tiktoken's own cache uses (SHA-1 of the download URL), and
``TIKTOKEN_CACHE_DIR`` points there. tiktoken then loads them through its
normal path, including its SHA-256 check, so a corrupted file is refused, not
used.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

import orjson
import tiktoken

_VOCAB_DIR = Path(__file__).with_name("tokenizer")
_BLOB_URL = "https://openaipublic.blob.core.windows.net/encodings/{}.tiktoken"
_EXPECTED_SHA256 = {
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
}
# Model families that use o200k_base; everything else is estimated with cl100k_base.
_O200K_PREFIXES = ("gpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "o1", "o3", "o4", "chatgpt-4o", "gpt-oss")


def install_offline_vocabularies(cache_dir: Path | None = None) -> Path:
    """Make tiktoken's standard encodings loadable without network access."""
    target = Path(os.environ.get("TIKTOKEN_CACHE_DIR") or cache_dir or Path(tempfile.gettempdir()) / "toolrelay-tiktoken")
    # Private like the rest of the data directory (issue 10 item 16): 0700, files 0600.
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)  # <data_dir>/cache
    target.mkdir(exist_ok=True, mode=0o700)
    for name, expected in _EXPECTED_SHA256.items():
        cache_file = target / hashlib.sha1(_BLOB_URL.format(name).encode()).hexdigest()
        if cache_file.exists() and hashlib.sha256(cache_file.read_bytes()).hexdigest() == expected:
            continue
        data = gzip.decompress((_VOCAB_DIR / f"{name}.tiktoken.gz").read_bytes())
        if hashlib.sha256(data).hexdigest() != expected:
            raise RuntimeError(f"bundled tiktoken vocabulary {name} is corrupted")
        tmp = cache_file.with_suffix(f".tmp{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        tmp.replace(cache_file)
    os.environ["TIKTOKEN_CACHE_DIR"] = str(target)
    return target


def encoding_name_for(model: str) -> str:
    base = model.rsplit("/", 1)[-1].lower()
    return "o200k_base" if base.startswith(_O200K_PREFIXES) else "cl100k_base"


class TokenCounter:
    """Estimates prompt and completion tokens the way OpenAI counts chat messages."""

    def __init__(self, cache_dir: Path | None = None) -> None:
        self._cache_dir = cache_dir
        self._encodings: dict[str, tiktoken.Encoding] = {}
        self._lock = threading.Lock()
        self._installed = False

    def install(self) -> None:
        """Unpack the offline vocabularies (files only, cheap); the encodings still load on first use."""
        with self._lock:
            if not self._installed:
                install_offline_vocabularies(self._cache_dir)
                self._installed = True

    def encoding(self, name: str) -> tiktoken.Encoding:
        enc = self._encodings.get(name)
        if enc is None:
            self.install()
            with self._lock:
                enc = self._encodings.get(name) or tiktoken.get_encoding(name)
                self._encodings[name] = enc
        return enc

    def warm(self) -> None:
        for name in _EXPECTED_SHA256:
            self.encoding(name)

    def is_loaded(self, model: str = "") -> bool:
        return encoding_name_for(model) in self._encodings

    async def prepare(self, model: str = "") -> None:
        """Load the encoding for ``model`` off the event loop (0.3-0.5 s, 40-70 MB, once).

        Encodings load on first need rather than at start-up: most upstreams
        report usage themselves, and an idle vocabulary is the largest part
        of the server's memory.
        """
        name = encoding_name_for(model)
        if name not in self._encodings:
            import anyio

            await anyio.to_thread.run_sync(self.encoding, name)

    def count_text(self, text: str, model: str = "") -> int:
        if not text:
            return 0
        return len(self.encoding(encoding_name_for(model)).encode(text, disallowed_special=()))

    def count_messages(self, messages: list[dict[str, Any]], model: str = "", tools: list[Any] | None = None) -> int:
        """Prompt tokens for a chat request: 3 per message, 1 per name, 3 to prime the reply."""
        enc = self.encoding(encoding_name_for(model))
        total = 3
        for message in messages:
            if not isinstance(message, dict):
                continue
            total += 3
            for key, value in message.items():
                if key == "name":
                    total += 1
                total += self._value_tokens(enc, value)
        if tools:
            total += len(enc.encode(orjson.dumps(tools).decode(), disallowed_special=()))
        return total

    def _value_tokens(self, enc: tiktoken.Encoding, value: Any) -> int:
        if isinstance(value, str):
            return len(enc.encode(value, disallowed_special=()))
        if isinstance(value, list):
            total = 0
            for part in value:
                if isinstance(part, dict):
                    if part.get("type") == "text":
                        total += len(enc.encode(str(part.get("text", "")), disallowed_special=()))
                    elif part.get("type") == "image_url":
                        total += 85  # OpenAI's low-detail image cost; a floor, not a price
                    else:
                        total += len(enc.encode(orjson.dumps(part).decode(), disallowed_special=()))
            return total
        if isinstance(value, dict):
            return len(enc.encode(orjson.dumps(value).decode(), disallowed_special=()))
        return 0
