"""fetch_page against real pages served on loopback.

Only 127.0.0.1 is exempted (``allow_networks``), and only in the tools that
need to reach the local server: every other private, loopback or metadata
address stays refused, so these tests run with the SSRF check switched on.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import jsonschema
import pytest
from web_test_servers import CA_FILE, LocalServer, MapResolver, Reply, server_tls_context

from toolrelay.tools.base import Source, Tool, ToolContext
from toolrelay.tools.fetch_page import FetchPageSettings, FetchPageTool

LOCAL_ONLY = ("127.0.0.1/32",)
# The test servers listen on ephemeral ports; port checks have their own tests.
ANY_PORT: tuple[int, ...] = ()

ARTICLE = (
    """<!DOCTYPE html>
<html><head>
<title>  The  Article  Title </title>
<style>body { color: red; } .secret-style {}</style>
<script>var tracking = "SCRIPT-MARKER";</script>
</head><body>
<nav><a href="/">Home</a> <a href="/about">NAV-MARKER</a></nav>
<main>
  <h1>Readable heading</h1>
  <p>First paragraph with <b>bold</b> and
     <a href="/x">a link</a>.</p>
  <script>document.write("INLINE-SCRIPT-MARKER")</script>
  <noscript>NOSCRIPT-MARKER</noscript>
  <p>Text around <script>x()</script>a script<br>and a line break.</p>
  <ul><li>alpha</li><li>beta</li></ul>
  <table><tr><th>k</th><th>v</th></tr><tr><td>one</td><td>1</td></tr></table>
  <pre>def f():
    return 42</pre>
  <div hidden>HIDDEN-MARKER</div>
  <p>"""
    + "Filler sentence for a realistic length. " * 12
    + """</p>
</main>
<footer>FOOTER-MARKER</footer>
</body></html>"""
)


def tool(**settings: Any) -> FetchPageTool:
    return FetchPageTool(FetchPageSettings(**({"allow_networks": LOCAL_ONLY, "allowed_ports": ANY_PORT} | settings)))


@pytest.fixture
async def fetcher() -> AsyncIterator[FetchPageTool]:
    fetch_tool = tool()
    yield fetch_tool
    await fetch_tool.aclose()


async def test_html_is_reduced_to_readable_text(site: LocalServer, fetcher: FetchPageTool, ctx: ToolContext) -> None:
    site.route("/article", Reply(200, ARTICLE, "text/html; charset=utf-8"))
    result = await fetcher.run({"url": site.url + "/article#section-2"}, ctx)

    assert not result.is_error, result.content
    url = site.url + "/article"
    assert result.sources == [Source(url=url, title="The Article Title")]
    assert result.content.startswith(f"URL: {url}\nTitle: The Article Title\n\n# Readable heading\n\n")
    assert "First paragraph with bold and a link." in result.content
    assert "Text around a script\nand a line break." in result.content
    assert "- alpha\n- beta" in result.content
    assert "k | v\none | 1" in result.content
    assert "def f():\n    return 42" in result.content
    for marker in (
        "SCRIPT-MARKER",
        "color: red",
        "NOSCRIPT-MARKER",
        "HIDDEN-MARKER",
        "NAV-MARKER",
        "FOOTER-MARKER",
    ):
        assert marker not in result.content
    assert result.data is not None
    assert result.data["status"] == 200
    assert result.data["content_type"] == "text/html"
    assert result.data["title"] == "The Article Title"
    assert result.data["truncated"] is False
    (hit,) = site.hits
    assert hit.path == "/article"  # the fragment never leaves the client
    assert hit.headers["user-agent"] == FetchPageSettings().user_agent


async def test_page_without_main_drops_chrome(site: LocalServer, fetcher: FetchPageTool, ctx: ToolContext) -> None:
    page = "<html><body><header>HEADER-MARKER</header><div><p>Body text here.</p></div><aside>ASIDE</aside></body></html>"
    site.route("/plain-html", Reply(200, page, "text/html"))
    result = await fetcher.run({"url": site.url + "/plain-html"}, ctx)
    assert result.content.endswith("Title: (none)\n\nBody text here.")


@pytest.mark.parametrize("content_type", ["text/plain; charset=utf-8", "text/markdown"])
async def test_text_is_returned_as_is(site: LocalServer, fetcher: FetchPageTool, ctx: ToolContext, content_type: str) -> None:
    body = "# Notes\n\n  indented <b>not html</b>\n\tand a tab\n"
    site.route("/notes", Reply(200, body, content_type))
    result = await fetcher.run({"url": site.url + "/notes"}, ctx)
    assert not result.is_error
    assert result.content == f"URL: {site.url}/notes\nTitle: (none)\n\n{body}"
    assert result.sources == [Source(url=site.url + "/notes", title="")]


async def test_json_is_pretty_printed(site: LocalServer, fetcher: FetchPageTool, ctx: ToolContext) -> None:
    site.route("/api", Reply(200, json.dumps({"name": "toolrelay", "tags": ["a", "b"], "n": 1}), "application/json"))
    result = await fetcher.run({"url": site.url + "/api"}, ctx)
    assert result.content.endswith('{\n  "name": "toolrelay",\n  "tags": [\n    "a",\n    "b"\n  ],\n  "n": 1\n}')
    assert result.data is not None and result.data["content_type"] == "application/json"


async def test_large_json_stays_within_the_character_budget(site: LocalServer, ctx: ToolContext) -> None:
    payload = {"items": [{"id": i, "value": "v" * 10} for i in range(400)]}
    site.route("/big.json", Reply(200, json.dumps(payload), "application/vnd.api+json"))
    fetcher = tool(max_chars=3000)
    result = await fetcher.run({"url": site.url + "/big.json"}, ctx)
    assert result.data is not None
    assert result.data["chars"] <= 3004
    assert "text cut to 3,000 characters" in result.content
    assert result.content.split("\n\n", 1)[1].startswith('{"items": [{"id": 0')  # compact, not indented


async def test_invalid_json_is_shown_raw(site: LocalServer, fetcher: FetchPageTool, ctx: ToolContext) -> None:
    site.route("/broken.json", Reply(200, "{not json", "application/json"))
    result = await fetcher.run({"url": site.url + "/broken.json"}, ctx)
    assert result.content.endswith("\n\n{not json")


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/pdf", b"%PDF-1.7\n" + b"\x00BINARY" * 700),
        ("image/png", b"\x89PNG\r\n\x1a\n" + b"\x00BINARY" * 700),
    ],
)
async def test_binary_types_are_described_not_dumped(site: LocalServer, fetcher: FetchPageTool, ctx: ToolContext, content_type: str, body: bytes) -> None:
    site.route("/file", Reply(200, body, content_type))
    result = await fetcher.run({"url": site.url + "/file"}, ctx)
    assert not result.is_error
    assert f"Type: {content_type}, {len(body):,} bytes" in result.content
    assert "BINARY" not in result.content and "PDF-1.7" not in result.content
    assert result.data is not None and result.data["binary"] is True and result.data["bytes"] == len(body)


async def test_untyped_binary_is_sniffed(site: LocalServer, fetcher: FetchPageTool, ctx: ToolContext) -> None:
    site.route("/blob", Reply(200, b"\x00\x01\x02BINARY" * 100, content_type=None))
    result = await fetcher.run({"url": site.url + "/blob"}, ctx)
    assert "Type: unknown type, 900 bytes" in result.content
    assert "BINARY" not in result.content


async def test_untyped_html_is_sniffed(site: LocalServer, fetcher: FetchPageTool, ctx: ToolContext) -> None:
    site.route(
        "/nohdr",
        Reply(200, "<!doctype html><title>Sniffed</title><p>hello</p><script>x()</script>", content_type=None),
    )
    result = await fetcher.run({"url": site.url + "/nohdr"}, ctx)
    assert result.content.endswith("Title: Sniffed\n\nhello")


async def test_oversize_body_is_cut_at_max_bytes(site: LocalServer, ctx: ToolContext) -> None:
    site.route("/huge.txt", Reply(200, "0123456789" * 5000, "text/plain"))
    fetcher = tool(max_bytes=10_000, max_chars=50_000)
    result = await fetcher.run({"url": site.url + "/huge.txt"}, ctx)
    assert result.data is not None
    assert result.data["bytes"] == 10_000 and result.data["truncated"] is True
    assert "larger than 10,000 bytes; only the first part was read" in result.content
    assert result.content.endswith("0123456789" * 1000)


async def test_endless_body_stops_at_max_bytes(site: LocalServer, ctx: ToolContext) -> None:
    def forever() -> Iterator[bytes]:
        while True:
            yield b"<p>more and more</p>" * 100

    site.route("/endless", Reply(200, content_type="text/html", chunks=forever()))
    fetcher = tool(max_bytes=50_000, timeout=10)
    started = time.monotonic()
    result = await fetcher.run({"url": site.url + "/endless"}, ctx)
    assert time.monotonic() - started < 5
    assert not result.is_error
    assert result.data is not None and result.data["bytes"] == 50_000 and result.data["truncated"] is True


async def test_deeply_nested_html_costs_linear_time(site: LocalServer, ctx: ToolContext) -> None:
    # HTML5 tree builders check "element in scope" against the whole stack of
    # open elements, so 2 MB of nested blocks can cost minutes of CPU in a
    # thread nobody can cancel. The parser we use must stay fast here.
    site.route("/nested", Reply(200, "<ul><li>" * 250_000, "text/html"))
    fetcher = tool(max_bytes=2_000_000, timeout=10)
    started = time.monotonic()
    result = await fetcher.run({"url": site.url + "/nested"}, ctx)
    assert time.monotonic() - started < 3
    assert not result.is_error


async def test_deep_but_plausible_nesting_keeps_its_text(site: LocalServer, ctx: ToolContext) -> None:
    page = "<div>" * 1500 + "<p>deep content</p>" + "</div>" * 1500 + "<p>after it</p>"
    site.route("/deep", Reply(200, page, "text/html"))
    result = await tool().run({"url": site.url + "/deep"}, ctx)
    assert result.content.endswith("deep content\n\nafter it")


async def test_long_text_is_cut_at_max_chars(site: LocalServer, ctx: ToolContext) -> None:
    site.route("/long", Reply(200, "word " * 2000, "text/plain"))
    result = await tool(max_chars=1000).run({"url": site.url + "/long"}, ctx)
    body = result.content.split("\n\n", 1)[1]
    assert len(body) <= 1004 and body.endswith(" […]")
    assert "text cut to 1,000 characters" in result.content


async def test_slow_page_times_out(site: LocalServer, ctx: ToolContext) -> None:
    site.route("/slow", Reply(200, "late", "text/plain", delay=5))
    started = time.monotonic()
    result = await tool(timeout=0.5).run({"url": site.url + "/slow"}, ctx)
    assert time.monotonic() - started < 2
    assert result.is_error
    assert "timed out after 0.5s" in result.content


async def test_slow_drip_is_bounded_by_total_time(site: LocalServer, ctx: ToolContext) -> None:
    # Each byte arrives well within any per-read timeout; only a bound on
    # the whole fetch stops this.
    def drip() -> Iterator[bytes]:
        while True:
            yield b"x"

    site.route("/drip", Reply(200, content_type="text/plain", chunks=drip(), chunk_delay=0.1))
    started = time.monotonic()
    result = await tool(timeout=1.0).run({"url": site.url + "/drip"}, ctx)
    assert 0.9 < time.monotonic() - started < 3
    assert result.is_error and "timed out after 1s" in result.content


async def test_redirect_chain_is_followed(site: LocalServer, fetcher: FetchPageTool, ctx: ToolContext) -> None:
    site.route("/r1", Reply(301, headers={"Location": "/r2"}))
    site.route("/r2", Reply(302, headers={"Location": f"{site.url}/r3?x=1"}))
    site.route("/r3", Reply(307, headers={"Location": "final"}))
    site.route("/final", Reply(200, "<title>Landed</title><p>arrived</p>", "text/html"))
    result = await fetcher.run({"url": site.url + "/r1"}, ctx)
    assert not result.is_error, result.content
    assert result.content.startswith(f"URL: {site.url}/final\nRedirected from: {site.url}/r1\nTitle: Landed")
    assert result.sources == [Source(url=f"{site.url}/final", title="Landed")]
    assert result.data is not None and result.data["redirects"] == 3
    assert [hit.path for hit in site.hits] == ["/r1", "/r2", "/r3", "/final"]
    assert site.hits[2].query == {"x": ["1"]}


async def test_too_many_redirects(site: LocalServer, ctx: ToolContext) -> None:
    site.route("/loop", Reply(302, headers={"Location": "/loop"}))
    result = await tool(max_redirects=5).run({"url": site.url + "/loop"}, ctx)
    assert result.is_error
    assert "too many redirects (more than 5)" in result.content
    assert site.count("/loop") == 6  # the first request and five followed redirects


async def test_http_errors_are_tool_errors(site: LocalServer, fetcher: FetchPageTool, ctx: ToolContext) -> None:
    result = await fetcher.run({"url": site.url + "/missing"}, ctx)
    assert result.is_error
    assert result.content == f"error: HTTP 404 Not Found from {site.url}/missing"
    assert result.data is not None and result.data["status"] == 404


@pytest.mark.parametrize(
    ("content_type", "body", "expected"),
    [
        ("text/plain; charset=iso-8859-1", "café crème".encode("latin-1"), "café crème"),
        ("text/html", '<meta charset="windows-1252"><p>na\xefve</p>'.encode("cp1252"), "naïve"),
        ("text/plain", "résumé ✓".encode(), "résumé ✓"),
        ("text/plain", "déjà".encode("cp1252"), "déjà"),
    ],
)
async def test_charsets(site: LocalServer, fetcher: FetchPageTool, ctx: ToolContext, content_type: str, body: bytes, expected: str) -> None:
    site.route("/enc", Reply(200, body, content_type))
    result = await fetcher.run({"url": site.url + "/enc"}, ctx)
    assert result.content.endswith(expected)


async def test_names_resolve_once_and_the_vetted_address_is_used(site: LocalServer, ctx: ToolContext) -> None:
    # docs.example.com does not resolve here (no DNS); the fetch can only
    # work if the connection goes to the address our resolver vetted. The
    # second answer (a metadata address) is what a rebinding DNS server would
    # hand out next: it must never be asked for within the same hop.
    resolver = MapResolver({"docs.example.com": [["127.0.0.1"], ["169.254.169.254"]]})
    site.route("/doc", Reply(200, "<title>Docs</title><p>pinned</p>", "text/html"))
    fetcher = FetchPageTool(FetchPageSettings(allow_networks=LOCAL_ONLY, allowed_ports=ANY_PORT), resolver=resolver)
    result = await fetcher.run({"url": f"http://docs.example.com:{site.port}/doc"}, ctx)
    assert not result.is_error, result.content
    assert result.content.startswith(f"URL: http://docs.example.com:{site.port}/doc\nTitle: Docs")
    assert resolver.calls == [("docs.example.com", site.port)]
    assert site.hits[0].headers["host"] == f"docs.example.com:{site.port}"

    # The next fetch gets the rebound answer and is refused before connecting.
    again = await fetcher.run({"url": f"http://docs.example.com:{site.port}/doc"}, ctx)
    assert again.is_error and "169.254.169.254" in again.content
    assert site.count("/doc") == 1


async def test_each_redirect_hop_is_resolved_and_pinned(site: LocalServer, ctx: ToolContext) -> None:
    resolver = MapResolver({"a.example.com": ["127.0.0.1"], "b.example.com": ["127.0.0.1"]})
    site.route("/hop", Reply(302, headers={"Location": f"http://b.example.com:{site.port}/end"}))
    site.route("/end", Reply(200, "done", "text/plain"))
    fetcher = FetchPageTool(FetchPageSettings(allow_networks=LOCAL_ONLY, allowed_ports=ANY_PORT), resolver=resolver)
    result = await fetcher.run({"url": f"http://a.example.com:{site.port}/hop"}, ctx)
    assert result.content.endswith("done")
    assert resolver.calls == [("a.example.com", site.port), ("b.example.com", site.port)]
    assert [h.headers["host"] for h in site.hits] == [
        f"a.example.com:{site.port}",
        f"b.example.com:{site.port}",
    ]


async def test_https_keeps_sni_and_certificate_name_while_pinned(ctx: ToolContext) -> None:
    sni: list[str] = []
    with LocalServer(tls=server_tls_context(sni)) as secure:
        secure.route("/tls", Reply(200, "<title>Secure</title><p>over tls</p>", "text/html"))
        resolver = MapResolver({"docs.example.com": ["127.0.0.1"]})
        fetcher = FetchPageTool(FetchPageSettings(allow_networks=LOCAL_ONLY, allowed_ports=ANY_PORT, verify=CA_FILE), resolver=resolver)
        result = await fetcher.run({"url": f"https://docs.example.com:{secure.port}/tls"}, ctx)
        assert not result.is_error, result.content
        assert result.content.endswith("over tls")
        assert sni == ["docs.example.com"]
        assert secure.hits[0].headers["host"] == f"docs.example.com:{secure.port}"

        # The certificate names docs.example.com, not 127.0.0.1: verification is on.
        direct = await fetcher.run({"url": f"https://127.0.0.1:{secure.port}/tls"}, ctx)
        assert direct.is_error and "failed" in direct.content
        assert secure.count("/tls") == 1
        await fetcher.aclose()


async def test_no_cookies_are_kept_between_fetches(site: LocalServer, fetcher: FetchPageTool, ctx: ToolContext) -> None:
    site.route("/set", Reply(200, "set", "text/plain", headers={"Set-Cookie": "session=secret; Path=/"}))
    site.route("/echo", Reply(200, "echo", "text/plain"))
    await fetcher.run({"url": site.url + "/set"}, ctx)
    await fetcher.run({"url": site.url + "/echo"}, ctx)
    assert "cookie" not in site.hits[1].headers


def test_schema_and_settings() -> None:
    fetcher = FetchPageTool()
    jsonschema.Draft202012Validator.check_schema(fetcher.parameters)
    validator = jsonschema.Draft202012Validator(fetcher.parameters)
    assert validator.is_valid({"url": "https://example.com/"})
    assert not validator.is_valid({})
    assert not validator.is_valid({"url": "https://example.com/", "other": 1})
    assert isinstance(fetcher, Tool)
    assert fetcher.name == "fetch_page" and fetcher.timeout > fetcher.settings.timeout
    with pytest.raises(ValueError):
        FetchPageSettings(allow_networks=("not a network",))
    with pytest.raises(ValueError):
        FetchPageSettings(max_bytes=0)
