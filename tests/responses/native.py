"""The relay the passthrough and upstream-failure suites share: auth on, a native Responses upstream beside the translated one.

==================  ===========================================================
model id            reached
==================  ===========================================================
``fake-model``      translated to chat (upstream ``fake``)
``native/<name>``   passed through to the fake's ``/v1/responses`` as ``<name>``
``slow-chat``       translated, upstream ``timeout`` :data:`TIMEOUT` s
``native-slow``     passed through, upstream ``timeout`` :data:`TIMEOUT` s
==================  ===========================================================
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fakes.relays import auth_tree
from fakes.upstream import FakeUpstream

__all__ = ["TIMEOUT", "native_tree"]

TIMEOUT = 1.5


def native_tree(fake: FakeUpstream, data_dir: Path, **upstreams: dict[str, Any]) -> dict[str, Any]:
    """:func:`fakes.relays.auth_tree` plus the upstreams in the module doc (and ``upstreams``)."""
    extra: dict[str, Any] = {
        "native": {"kind": "openai", "base_url": fake.base_url, "model_prefix": "native/", "responses_api": "native"},
        "nativeslow": {"kind": "openai", "base_url": fake.base_url, "models": ["native-slow"], "responses_api": "native", "timeout": TIMEOUT},
        "slowchat": {"kind": "openai", "base_url": fake.base_url, "models": ["slow-chat"], "timeout": TIMEOUT},
        **upstreams,
    }
    return auth_tree(fake, data_dir, extra_upstreams=extra)
