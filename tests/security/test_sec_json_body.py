"""Issue 10 items 4 (parse half) and 17: request bodies that are not strict, bounded JSON.

Before: the stdlib fallback parser accepted ``NaN``/``Infinity`` and lone
surrogates (which later killed the ledger's writer thread), and recursed
1,100 levels deep into a 500 with a traceback. Now every JSON endpoint
answers such bodies with an OpenAI-shaped 400 ``invalid_json`` and the
upstream is never called.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from proxy.helpers import assert_openai_error

from fakes.upstream import FakeUpstream
from toolrelay.app.jsonbody import MAX_JSON_DEPTH

JSON = {"content-type": "application/json"}
HEAD = b'{"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]'


def _post(http: httpx.Client, raw: bytes, path: str = "/v1/chat/completions") -> httpx.Response:
    return http.post(path, content=raw, headers=JSON)


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@pytest.mark.parametrize(
    "raw",
    [
        HEAD + b', "temperature": NaN}',
        HEAD + b', "temperature": Infinity}',
        HEAD + b', "temperature": -Infinity}',
        HEAD + b', "x_extra": 1e400}',
        b'{"model": "fake-model\\ud800", "messages": [{"role": "user", "content": "hi"}]}',
        b'{"model": "fake-model", "messages": [{"role": "user", "content": "a\\udc00b"}]}',
        HEAD + b', "metadata": {"\\ud83d": "lone high surrogate in a key"}}',
        # The review's body: NaN and a lone surrogate in `model`.
        b'{"model": "\\ud800", "messages": [{"role": "user", "content": "hi"}], "temperature": NaN}',
    ],
    ids=["nan", "infinity", "-infinity", "overflow", "surrogate-model", "surrogate-content", "surrogate-key", "review-body"],
)
def test_non_json_values_are_400(http: httpx.Client, fake: FakeUpstream, raw: bytes) -> None:
    assert_openai_error(_post(http, raw), 400, code="invalid_json", type="invalid_request_error")
    assert fake.chat_requests == []


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 1_100, 100_000])
def test_deep_nesting_is_400_not_500(http: httpx.Client, fake: FakeUpstream, depth: int) -> None:
    raw = HEAD + b', "x_extra": ' + _nested(depth) + b"}"
    err = assert_openai_error(_post(http, raw), 400, code="invalid_json")
    if depth < 1024:  # deeper bodies are stopped by orjson's own limit, with its message
        assert f"deeper than {MAX_JSON_DEPTH}" in err["message"]
    assert fake.chat_requests == []


def test_reasonable_nesting_and_huge_integers_still_pass(http: httpx.Client, fake: FakeUpstream) -> None:
    # 100 levels inside a body (depth 1) under "x_extra" plus a >64-bit integer: forwarded exactly.
    raw = HEAD + b', "x_extra": ' + _nested(100) + b', "seed": 1180591620717411303424, "x_low": -9223372036854775809}'
    response = _post(http, raw)
    assert response.status_code == 200, response.text
    assert fake.last_body["seed"] == 2**70
    assert fake.last_body["x_low"] == -(2**63) - 1  # 19 digits: orjson made this a float before
    assert json.loads(b'{"x": ' + _nested(100) + b"}")["x"] == fake.last_body["x_extra"]


def test_memories_endpoint_uses_the_same_parser(http: httpx.Client) -> None:
    for raw in (b'{"text": "x", "tags": [NaN]}', b'{"text": "\\ud800"}', b'{"text": "x", "meta": ' + _nested(1_100) + b"}"):
        assert_openai_error(_post(http, raw, "/v1/memories"), 400, code="invalid_json")


# -- property: no body ever gets a 500 ------------------------------------------------

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20)
_KEYS = [
    "model",
    "messages",
    "tools",
    "tool_choice",
    "response_format",
    "stream",
    "stream_options",
    "n",
    "seed",
    "temperature",
    "max_tokens",
    "stop",
    "logit_bias",
    "metadata",
    "user",
]
_TOKENS = [
    b"NaN",
    b"Infinity",
    b"-Infinity",
    b'"\\ud800"',
    b'"\\udfff"',
    b"1e999",
    b"-0",
    b"99999999999999999999999",
    _nested(200),
    b"{",
    b"}",
    b"]",
    b",",
    b":",
    b'"',
    b"\\",
    b"\xff",
    b"\x00",
    b"true",
]


@st.composite
def _weird_bodies(draw: Any) -> bytes:
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return draw(st.binary(max_size=64))
    body: dict[str, Any] = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}
    for key in draw(st.lists(st.sampled_from(_KEYS), max_size=4)):
        body[key] = draw(_values)
    raw = json.dumps(body).encode()
    if kind == 1:
        return raw
    # Splice raw tokens (non-JSON constants, lone surrogates, brackets) at random places.
    for token in draw(st.lists(st.sampled_from(_TOKENS), min_size=1, max_size=3)):
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + token + raw[at:]
    if kind == 3:
        raw = raw.replace(b'"hi"', b'"hi\\ud800"')
    return raw


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(raw=_weird_bodies())
def test_no_body_gets_a_500(http: httpx.Client, fake: FakeUpstream, raw: bytes) -> None:
    for path in ("/v1/chat/completions", "/v1/memories"):
        response = _post(http, raw, path)
        assert response.status_code < 500, (path, raw, response.status_code, response.text)
        if response.status_code >= 400:
            assert_openai_error(response, response.status_code)
