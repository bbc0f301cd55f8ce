"""web_search against a local SearXNG-shaped server and ddgs routed through a local TLS proxy."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import anyio
import jsonschema
import pytest
from web_test_servers import CA_FILE, FakeSite, LocalServer, Reply, TlsInterceptingProxy, free_port

from toolrelay.tools.base import Source, Tool, ToolContext
from toolrelay.tools.web_search import (
    DdgsBackend,
    SearchHit,
    WebSearchSettings,
    WebSearchTool,
    searxng_language,
)

# --------------------------------------------------------------------------- SearXNG


def searx_results(n: int, prefix: str = "r") -> list[dict[str, Any]]:
    return [
        {
            "url": f"https://{prefix}{i}.example.org/page",
            "title": f"Result {i}",
            "content": f"snippet {i}",
            "engine": "x",
        }
        for i in range(n)
    ]


def json_reply(payload: Any, status: int = 200, delay: float = 0.0) -> Reply:
    return Reply(status, json.dumps(payload), "application/json", delay=delay)


@pytest.fixture
def searx() -> Iterator[LocalServer]:
    with LocalServer() as server:
        server.route("/search", json_reply({"query": "q", "results": searx_results(8)}))
        yield server


def searx_tool(server: LocalServer, **overrides: Any) -> WebSearchTool:
    return WebSearchTool(WebSearchSettings(backend="searxng", searxng_url=server.url + "/", **overrides))


async def test_searxng_results_are_bounded_and_cited(searx: LocalServer, ctx: ToolContext) -> None:
    long_title = "T" * 500
    long_snippet = "word " * 300
    results = [
        {"url": "https://a.example.org/1", "title": long_title, "content": long_snippet},
        {"url": "https://a.example.org/1", "title": "duplicate", "content": "dup"},
        {"url": "javascript:alert(1)", "title": "not a web page", "content": ""},
        {"title": "no url at all"},
        {"url": "https://b.example.org/2", "title": "  Second \n result ", "content": "two"},
        {"url": "https://c.example.org/3", "title": "Third", "content": "three"},
        {"url": "https://d.example.org/4", "title": "Fourth", "content": "four"},
    ]
    searx.route("/search", json_reply({"results": results}))
    tool = searx_tool(searx)
    try:
        result = await tool.run({"query": "rust  async", "max_results": 3, "region": "de-de", "time_range": "week"}, ctx)
    finally:
        await tool.aclose()

    assert not result.is_error
    assert result.data == {"backend": "searxng", "results": 3, "cached": False}
    assert [s.url for s in result.sources] == [
        "https://a.example.org/1",
        "https://b.example.org/2",
        "https://c.example.org/3",
    ]
    first = result.sources[0]
    assert len(first.title) == 200 and first.title.endswith("…")
    assert len(first.snippet) <= 400 and first.snippet.endswith("…")
    assert result.sources[1] == Source(url="https://b.example.org/2", title="Second result", snippet="two")
    assert "javascript:" not in result.content and "Fourth" not in result.content
    assert result.content.startswith('Results for "rust async":')
    assert "[2] Second result\nhttps://b.example.org/2\ntwo" in result.content

    (hit,) = searx.hits
    assert hit.path == "/search"
    assert hit.query == {
        "q": ["rust async"],
        "format": ["json"],
        "safesearch": ["1"],
        "pageno": ["1"],
        "language": ["de-DE"],
        "time_range": ["week"],
    }


async def test_searxng_default_region_and_count(searx: LocalServer, ctx: ToolContext) -> None:
    tool = searx_tool(searx, region="uk-en", safesearch="off", max_results=4)
    result = await tool.run({"query": "tea"}, ctx)
    await tool.aclose()
    assert result.data == {"backend": "searxng", "results": 4, "cached": False}
    assert searx.hits[0].query["language"] == ["en-GB"]
    assert searx.hits[0].query["safesearch"] == ["0"]
    assert "time_range" not in searx.hits[0].query


async def test_identical_queries_are_cached(searx: LocalServer, ctx: ToolContext) -> None:
    now = [1000.0]
    tool = WebSearchTool(
        WebSearchSettings(backend="searxng", searxng_url=searx.url, cache_ttl_seconds=300),
        clock=lambda: now[0],
    )
    first = await tool.run({"query": "python asyncio"}, ctx)
    second = await tool.run({"query": "  python   asyncio "}, ctx)
    assert searx.count("/search") == 1
    assert second.data == {"backend": "searxng", "results": 5, "cached": True}
    assert second.content == first.content and second.sources == first.sources

    # Different arguments are a different search.
    await tool.run({"query": "python asyncio", "time_range": "day"}, ctx)
    await tool.run({"query": "python asyncio", "max_results": 2}, ctx)
    assert searx.count("/search") == 3

    # Past the TTL the entry is gone.
    now[0] += 301
    again = await tool.run({"query": "python asyncio"}, ctx)
    assert again.data is not None and again.data["cached"] is False
    assert searx.count("/search") == 4
    await tool.aclose()


async def test_cache_is_bounded(searx: LocalServer, ctx: ToolContext) -> None:
    tool = searx_tool(searx, cache_size=2)
    for query in ("a1", "b2", "c3", "a1"):
        await tool.run({"query": query}, ctx)
    await tool.aclose()
    # a1 was evicted by c3, so the fourth call went to the server again.
    assert searx.count("/search") == 4


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (json_reply({"error": "slow down"}, status=429), "rate limiting us (HTTP 429)"),
        (json_reply({}, status=503), "SearXNG failed (HTTP 503)"),
        (Reply(403, "Forbidden", "text/html"), "search.formats"),
        (Reply(404, "nope", "text/html"), "SearXNG answered HTTP 404"),
        (Reply(200, "<html>not json</html>", "text/html"), "did not return JSON"),
        (json_reply({"answers": []}), "without a results list"),
        (
            json_reply(
                {
                    "results": [],
                    "unresponsive_engines": [["google", "too many requests"], ["brave", "timeout"]],
                }
            ),
            "its engines failed: google too many requests, brave timeout",
        ),
    ],
)
async def test_searxng_failures_are_tool_errors(searx: LocalServer, ctx: ToolContext, reply: Reply, expected: str) -> None:
    searx.route("/search", reply)
    tool = searx_tool(searx)
    result = await tool.run({"query": "anything"}, ctx)
    assert result.is_error
    assert expected in result.content
    assert result.data == {"backend": "searxng"}
    # Failures are not cached: the next call asks again.
    await tool.run({"query": "anything"}, ctx)
    assert searx.count("/search") == 2
    await tool.aclose()


async def test_searxng_empty_results_are_not_an_error(searx: LocalServer, ctx: ToolContext) -> None:
    searx.route("/search", json_reply({"results": []}))
    tool = searx_tool(searx)
    result = await tool.run({"query": "zzqqxx"}, ctx)
    await tool.aclose()
    assert not result.is_error
    assert result.content == 'No results for "zzqqxx".'
    assert result.data == {"backend": "searxng", "results": 0, "cached": False}
    assert result.sources == []


async def test_searxng_slow_server_times_out(searx: LocalServer, ctx: ToolContext) -> None:
    searx.route("/search", json_reply({"results": searx_results(3)}, delay=3.0))
    tool = searx_tool(searx, timeout=0.5)
    started = time.monotonic()
    result = await tool.run({"query": "slow"}, ctx)
    elapsed = time.monotonic() - started
    await tool.aclose()
    assert result.is_error
    assert "0.5s" in result.content
    assert elapsed < 2.0
    assert searx.count("/search") == 1


async def test_searxng_unreachable(ctx: ToolContext) -> None:
    tool = WebSearchTool(WebSearchSettings(backend="searxng", searxng_url=f"http://127.0.0.1:{free_port()}"))
    result = await tool.run({"query": "x"}, ctx)
    await tool.aclose()
    assert result.is_error
    assert "could not reach SearXNG" in result.content


# --------------------------------------------------------------------------- tool contract


async def test_bad_arguments_never_reach_the_backend(searx: LocalServer, ctx: ToolContext) -> None:
    tool = searx_tool(searx)
    bad: list[dict[str, Any]] = [
        {},
        {"query": "   "},
        {"query": 42},
        {"query": "x", "max_results": 0},
        {"query": "x", "max_results": 11},
        {"query": "x", "max_results": True},
        {"query": "x", "region": "english"},
        {"query": "x", "time_range": "decade"},
    ]
    for arguments in bad:
        result = await tool.run(arguments, ctx)
        assert result.is_error, arguments
    await tool.aclose()
    assert searx.hits == []


def test_schema_matches_the_runtime_checks() -> None:
    tool = WebSearchTool(WebSearchSettings(max_results_cap=7))
    schema = tool.parameters
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    assert validator.is_valid({"query": "x", "max_results": 7, "region": "fr-fr", "time_range": "year"})
    assert not validator.is_valid({"query": "x", "max_results": 8})
    assert not validator.is_valid({"query": "x", "region": "en_US"})
    assert not validator.is_valid({"query": "x", "extra": 1})
    assert not validator.is_valid({"max_results": 3})
    assert isinstance(tool, Tool)
    assert tool.name == "web_search"
    assert tool.timeout > tool.settings.timeout


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError):
        WebSearchSettings(backend="searxng")
    with pytest.raises(ValueError):
        WebSearchSettings(backend="bing")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        WebSearchSettings(max_results=11)
    with pytest.raises(ValueError):
        WebSearchSettings(region="english")


def test_searxng_language_mapping() -> None:
    assert searxng_language("us-en") == "en-US"
    assert searxng_language("de-de") == "de-DE"
    assert searxng_language("uk-en") == "en-GB"
    assert searxng_language("wt-wt") == "all"


class _Exploding:
    name = "boom"

    async def search(self, query: str, max_results: int, region: str | None, timelimit: Any) -> list[SearchHit]:
        raise RuntimeError("backend bug")


class _Hanging:
    name = "hang"

    async def search(self, query: str, max_results: int, region: str | None, timelimit: Any) -> list[SearchHit]:
        await anyio.sleep(30)
        return []


async def test_backend_exceptions_and_hangs_become_errors(ctx: ToolContext) -> None:
    result = await WebSearchTool(backend=_Exploding()).run({"query": "x"}, ctx)
    assert result.is_error and "RuntimeError: backend bug" in result.content
    assert result.data == {"backend": "boom"}

    started = time.monotonic()
    result = await WebSearchTool(WebSearchSettings(timeout=0.3), backend=_Hanging()).run({"query": "x"}, ctx)
    assert result.is_error and "timed out after 0.3s" in result.content
    assert time.monotonic() - started < 2


# --------------------------------------------------------------------------- ddgs


def ddg_html(results: list[tuple[str, str, str]]) -> str:
    """The shape of html.duckduckgo.com/html/ that ddgs' Duckduckgo engine parses."""
    blocks = "".join(
        f"""<div class="result results_links results_links_deep web-result">
        <div class="links_main links_deep result__body">
        <h2 class="result__title"><a rel="nofollow" class="result__a" href="{url}">{title}</a></h2>
        <a class="result__snippet" href="{url}">{snippet}</a>
        </div></div>"""
        for title, url, snippet in results
    )
    return f"<!DOCTYPE html><html><head><title>q at DuckDuckGo</title></head><body>{blocks}</body></html>"


DDG_RESULTS = [
    (
        "Asyncio &amp; <b>Python</b> docs",
        "https://docs.python.org/3/library/asyncio.html",
        "asyncio is a <b>library</b> to write concurrent code",
    ),
    (
        "Python asyncio tutorial",
        "https://realpython.com/async-io-python/",
        "A walkthrough of python async IO",
    ),
    ("Ad", "https://duckduckgo.com/y.js?ad_domain=x", "an ad ddgs drops"),
]


@pytest.fixture
def ddg() -> Iterator[tuple[FakeSite, TlsInterceptingProxy]]:
    site = FakeSite({"html.duckduckgo.com"})
    site.route("/html/", Reply(200, ddg_html(DDG_RESULTS), "text/html; charset=utf-8"))
    with TlsInterceptingProxy(site) as proxy:
        yield site, proxy


def ddgs_tool(proxy: TlsInterceptingProxy, **overrides: Any) -> WebSearchTool:
    settings: dict[str, Any] = {
        "backend": "ddgs",
        "ddgs_engines": "duckduckgo",
        "proxy": proxy.url,
        "verify": CA_FILE,
    }
    return WebSearchTool(WebSearchSettings(**(settings | overrides)))


async def test_ddgs_backend_end_to_end(ddg: tuple[FakeSite, TlsInterceptingProxy], ctx: ToolContext) -> None:
    site, proxy = ddg
    tool = ddgs_tool(proxy)
    result = await tool.run({"query": "python asyncio", "region": "de-de", "time_range": "week"}, ctx)
    assert not result.is_error, result.content
    assert result.data == {"backend": "ddgs", "results": 2, "cached": False}
    assert result.sources == [
        Source(
            url="https://docs.python.org/3/library/asyncio.html",
            title="Asyncio & Python docs",
            snippet="asyncio is a library to write concurrent code",
        ),
        Source(
            url="https://realpython.com/async-io-python/",
            title="Python asyncio tutorial",
            snippet="A walkthrough of python async IO",
        ),
    ]
    assert proxy.connects == ["html.duckduckgo.com"]
    (hit,) = site.hits
    assert (hit.method, hit.path, hit.host) == ("POST", "/html/", "html.duckduckgo.com")
    form = dict(pair.split("=", 1) for pair in hit.body.decode().split("&"))
    assert form["q"] == "python+asyncio" and form["l"] == "de-de" and form["df"] == "w"

    cached = await tool.run({"query": "python asyncio", "region": "de-de", "time_range": "week"}, ctx)
    assert cached.data == {"backend": "ddgs", "results": 2, "cached": True}
    assert site.count("/html/") == 1
    await tool.aclose()


async def test_ddgs_auto_engines_fall_through_to_duckduckgo(ddg: tuple[FakeSite, TlsInterceptingProxy], ctx: ToolContext) -> None:
    # The default: ddgs tries several engines; every one but DuckDuckGo is
    # refused by the proxy here, and the answer still comes through.
    site, proxy = ddg
    tool = ddgs_tool(proxy, ddgs_engines="auto", max_results=2)
    result = await tool.run({"query": "python asyncio"}, ctx)
    assert not result.is_error, result.content
    assert [s.url for s in result.sources] == [
        "https://docs.python.org/3/library/asyncio.html",
        "https://realpython.com/async-io-python/",
    ]
    assert "html.duckduckgo.com" in proxy.connects
    assert len(set(proxy.connects)) > 1
    assert site.count("/html/") == 1


async def test_ddgs_rate_limited_page_is_no_results_and_not_cached(ddg: tuple[FakeSite, TlsInterceptingProxy], ctx: ToolContext) -> None:
    site, proxy = ddg
    site.route("/html/", Reply(429, "slow down", "text/html"))
    tool = ddgs_tool(proxy)
    result = await tool.run({"query": "python"}, ctx)
    assert not result.is_error
    assert result.content.startswith('No results for "python" (with ddgs this can also mean the engines refused us')
    assert result.data == {"backend": "ddgs", "results": 0, "cached": False}
    await tool.run({"query": "python"}, ctx)
    assert site.count("/html/") == 2


async def test_ddgs_connection_failure_is_an_error(ctx: ToolContext) -> None:
    site = FakeSite(set())  # the proxy refuses every CONNECT
    with TlsInterceptingProxy(site) as proxy:
        result = await ddgs_tool(proxy).run({"query": "python"}, ctx)
        assert proxy.connects == ["html.duckduckgo.com"]
    assert result.is_error
    assert result.content.startswith("error: search failed (ddgs):")
    assert result.data == {"backend": "ddgs"}


async def test_ddgs_slow_engine_times_out(ddg: tuple[FakeSite, TlsInterceptingProxy], ctx: ToolContext) -> None:
    site, proxy = ddg
    site.route("/html/", Reply(200, ddg_html(DDG_RESULTS), "text/html", delay=4.0))
    tool = ddgs_tool(proxy, timeout=1.0)
    started = time.monotonic()
    result = await tool.run({"query": "python"}, ctx)
    assert result.is_error
    assert "did not answer in time" in result.content or "timed out after 1s" in result.content
    assert time.monotonic() - started < 3.0


@pytest.mark.parametrize(
    ("exception", "expected"),
    [
        ("RatelimitException", "rate limiting us"),
        ("TimeoutException", "did not answer in time"),
        ("DDGSException", "search failed (ddgs): boom"),
    ],
)
async def test_ddgs_exceptions_are_mapped(monkeypatch: pytest.MonkeyPatch, ctx: ToolContext, exception: str, expected: str) -> None:
    import ddgs.ddgs
    import ddgs.exceptions

    def fail(self: object, query: str, **kwargs: Any) -> list[dict[str, str]]:
        raise getattr(ddgs.exceptions, exception)("boom")

    monkeypatch.setattr(ddgs.ddgs.DDGS, "text", fail)
    result = await WebSearchTool(backend=DdgsBackend()).run({"query": "x"}, ctx)
    assert result.is_error
    assert expected in result.content


async def test_ddgs_is_the_default_backend() -> None:
    tool = WebSearchTool()
    assert isinstance(tool.backend, DdgsBackend)
    await tool.aclose()
