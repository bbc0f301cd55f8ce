"""Security headers on every response (API answers, errors, refusals, streams) and a policy for the
docs pages that allows exactly what each page loads."""

from __future__ import annotations

import base64
import hashlib
import re

import httpx
import openai
import pytest

from fakes.server import RunningServer
from fakes.upstream import FakeUpstream, Reply
from toolrelay.app.security_headers import docs_policy

COMMON = {"x-content-type-options": "nosniff", "referrer-policy": "no-referrer", "x-frame-options": "DENY"}
STRICT = "default-src 'none'; frame-ancestors 'none'"
USER = [{"role": "user", "content": "hi"}]


def assert_secured(headers: httpx.Headers, policy: str | None = STRICT) -> None:
    for name, value in COMMON.items():
        assert headers.get_list(name) == [value], (name, headers)
    if policy is not None:
        assert headers.get_list("content-security-policy") == [policy], headers


def test_api_answers_and_errors_carry_the_headers(relay: RunningServer, fake: FakeUpstream) -> None:
    client = openai.OpenAI(base_url=relay.base_url, api_key="sk-none", max_retries=0)
    fake.enqueue(Reply(content="a"), Reply(content="b"))
    assert_secured(client.chat.completions.with_raw_response.create(model="fake-model", messages=USER).headers)  # type: ignore[arg-type]
    with client.chat.completions.with_streaming_response.create(model="fake-model", messages=USER, stream=True) as stream:  # type: ignore[arg-type]
        assert_secured(stream.headers)
        assert any("[DONE]" in line for line in stream.iter_lines())
    with httpx.Client(base_url=relay.root_url) as http:
        for response in (
            http.get("/v1/models"),
            http.get("/health"),
            http.get("/no/such/path"),  # Litestar's 404, before routing
            http.post("/v1/chat/completions", json={"model": "nope", "messages": USER}),  # model_not_found
            http.post("/v1/chat/completions", content=b"{}", headers={"content-type": "text/plain"}),  # the guard's 415
            http.get("/docs/openapi.json"),
        ):
            assert_secured(response.headers)


@pytest.mark.parametrize("page", ["/docs", "/docs/swagger", "/docs/redoc", "/docs/rapidoc", "/docs/elements"])
def test_docs_pages_allow_exactly_what_they_load(relay: RunningServer, page: str) -> None:
    response = httpx.get(relay.root_url + page)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert_secured(response.headers, policy=None)
    [policy] = response.headers.get_list("content-security-policy")
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert directives["default-src"] == "'none'" and directives["frame-ancestors"] == "'none'"
    script_sources = directives["script-src"].split()
    assert "'unsafe-inline'" not in script_sources
    html = response.content
    srcs = re.findall(rb"<script[^>]*\bsrc=[\"']([^\"']+)", html)
    inline = [body for attrs, body in re.findall(rb"<script\b([^>]*)>(.*?)</script>", html, re.S) if b"src=" not in attrs and body.strip()]
    assert srcs or inline
    for src in srcs:
        assert src.decode() in script_sources
    for body in inline:
        assert "'sha256-" + base64.b64encode(hashlib.sha256(body).digest()).decode() + "'" in script_sources
    # Nothing else may run: every script source is one of those.
    assert len(script_sources) == len(set(srcs)) + len(inline)
    assert int(response.headers["content-length"]) == len(html)


@pytest.mark.parametrize(
    ("html", "script_src", "style_src"),
    [
        (b"<html></html>", "'none'", "'unsafe-inline'"),
        (b"<script src='https://cdn.example/a.js'></script>", "https://cdn.example/a.js", "'unsafe-inline' https://cdn.example"),
        (b"<script src='http://cdn.example/a.js'></script>", "'none'", "'unsafe-inline'"),
        (b"<script src='/static/a.js'></script>", "'self'", "'unsafe-inline'"),
        (b"<script>go()</script>", "'sha256-" + base64.b64encode(hashlib.sha256(b"go()").digest()).decode() + "'", "'unsafe-inline'"),
        (
            b"<link href='https://fonts.googleapis.com/css?x' rel='stylesheet'><link rel='icon' href='https://img.example/i.png'>",
            "'none'",
            "'unsafe-inline' https://fonts.googleapis.com",
        ),
    ],
)
def test_docs_policy_table(html: bytes, script_src: str, style_src: str) -> None:
    directives = dict(d.strip().split(" ", 1) for d in docs_policy(html).split(";"))
    assert directives["script-src"] == script_src
    assert directives["style-src"] == style_src
    if b"fonts.googleapis.com" in html:
        assert "https://fonts.gstatic.com" in directives["font-src"] and "https://img.example" in directives["img-src"]
