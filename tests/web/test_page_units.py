"""Table-driven unit tests of fetch_page's pure parts: URL parsing, address vetting, content kinds, decoding."""

from __future__ import annotations

import ipaddress

import pytest

from toolrelay.tools.network_guard import FetchRefused, forbidden_reason, parse_url
from toolrelay.tools.page_text import clip, decode, html_to_text, kind_of, pretty_json, sniff


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("https://example.com/a#frag", "https://example.com/a"),
        ("example.com/path", "https://example.com/path"),
        ("  http://example.com:8080/  ", "http://example.com:8080/"),
    ],
)
def test_parse_url_accepts(raw: str, expected: str) -> None:
    assert str(parse_url(raw)) == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("ftp://example.com/", "only http and https"),
        ("file:///etc/passwd", "only http and https"),
        ("/relative", "only http and https"),
        ("http://user:pw@example.com/", "user name or password"),
        ("http:///nohost", "no host"),
    ],
)
def test_parse_url_refuses(raw: str, reason: str) -> None:
    with pytest.raises(FetchRefused, match=reason):
        parse_url(raw)


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("93.184.216.34", None),
        ("2606:2800:220:1:248:1893:25c8:1946", None),
        ("127.0.0.1", "a loopback address"),
        ("10.1.2.3", "a private address"),
        ("169.254.169.254", "a cloud metadata address"),
        ("168.63.129.16", "a cloud metadata address"),
        ("100.64.0.1", "not a public address"),
        ("::ffff:127.0.0.1", "a loopback address (embedded in ::ffff:7f00:1)"),
        ("64:ff9b::a00:1", "a private address (embedded in 64:ff9b::a00:1)"),
        ("fe80::1", "a link-local address"),
        ("224.0.0.1", "a multicast address"),
    ],
)
def test_forbidden_reason(address: str, reason: str | None) -> None:
    assert forbidden_reason(ipaddress.ip_address(address)) == reason


@pytest.mark.parametrize(
    ("mime", "kind"),
    [
        ("text/html", "html"),
        ("application/xhtml+xml", "html"),
        ("application/json", "json"),
        ("application/ld+json", "json"),
        ("text/plain", "text"),
        ("application/rss+xml", "text"),
        ("", "unknown"),
        ("image/png", "binary"),
    ],
)
def test_kind_of(mime: str, kind: str) -> None:
    assert kind_of(mime) == kind


@pytest.mark.parametrize(
    ("head", "kind"),
    [(b"\x89PNG\x00\x00", "binary"), (b"  <!DOCTYPE html><p>x", "html"), (b"<div><body>", "html"), (b"plain words", "text")],
)
def test_sniff(head: bytes, kind: str) -> None:
    assert sniff(head) == kind


@pytest.mark.parametrize(
    ("body", "content_type", "truncated", "html", "text"),
    [
        ("caf\u00e9".encode(), "text/plain", False, False, "caf\u00e9"),
        ("caf\u00e9".encode("cp1252"), "text/plain", False, False, "caf\u00e9"),  # not UTF-8: cp1252 guess
        ("caf\u00e9".encode("latin-1"), "text/plain; charset=latin-1", False, False, "caf\u00e9"),
        (b'<meta charset="iso-8859-1"><p>caf\xe9', "text/html", False, True, '<meta charset="iso-8859-1"><p>caf\u00e9'),
        ("ab\u20ac".encode()[:-1], "text/plain; charset=utf-8", True, False, "ab"),  # a character cut by the limit
        (b"\xef\xbb\xbfbom", "", False, False, "bom"),
    ],
)
def test_decode(body: bytes, content_type: str, truncated: bool, html: bool, text: str) -> None:
    assert decode(body, content_type, truncated, html=html) == text


def test_clip_and_pretty_json() -> None:
    assert clip("short", 10) == ("short", False)
    text, cut = clip("word " * 100, 50)
    assert cut and text.endswith(" […]") and len(text) <= 54
    assert pretty_json('{"a": [1, 2]}', 1000) == '{\n  "a": [\n    1,\n    2\n  ]\n}'
    assert pretty_json('{"a": [1, 2]}', 5) == '{"a": [1, 2]}'
    assert pretty_json("not json", 100) == "not json"


def test_html_to_text_keeps_structure_and_drops_chrome() -> None:
    title, text = html_to_text(
        "<html><head><title> The  title </title><script>x()</script></head><body>"
        "<nav>menu</nav><h1>Head</h1><p>One <b>two</b></p><ul><li>a</li><li>b</li></ul>"
        "<pre>  indented\n    more</pre><footer>foot</footer></body></html>"
    )
    assert title == "The title"
    assert text == "# Head\n\nOne two\n\n- a\n- b\n\n  indented\n    more"
