"""The ``fetch_page`` built-in tool: GET one web page and return its readable text.

The URL comes from a model, which may have read it on a hostile page, so every
hop is treated as an SSRF attempt until proven otherwise: the host name is
resolved by us, every address it resolves to must be public, and the
connection then goes to that vetted address only (the URL is rewritten to the
IP while Host and TLS SNI/certificate checks keep the original name), so a DNS
answer that changes between the check and the connect cannot redirect us
inward. Redirects are followed by hand so each hop gets the same treatment.
"""

from __future__ import annotations

import codecs
import inspect
import ipaddress
import json
import logging
import re
import socket
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any

import anyio
import certifi
import httpx
from lxml import etree  # type: ignore[import-untyped]
from lxml import html as lxml_html

from toolrelay.app.settings import FetchPageSettings
from toolrelay.tools.base import Source, ToolContext, ToolResult
from toolrelay.tools.host_addresses import HostAddresses

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# resolve(host, port) -> addresses as strings; may be sync or async. Sync ones
# run in a worker thread because the natural implementation blocks.
Resolver = Callable[[str, int], Sequence[str] | Awaitable[Sequence[str]]]


class FetchRefused(Exception):
    """The URL (or a redirect hop) is not allowed; the message is model-facing."""


# Ranges refused on top of the ``ipaddress`` flags: those flags have shifted
# between Python releases, and a few ranges (CGNAT, benchmarking, 6to4 relay)
# are not "private" by them yet are not somewhere a web page lives either.
_BLOCKED_NETWORKS = tuple(
    ipaddress.ip_network(net)
    for net in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.88.99.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "::/128",
        "::1/128",
        "::ffff:0:0/96",
        "64:ff9b:1::/48",
        "100::/64",
        "2001:db8::/32",
        "fc00::/7",
        "fe80::/10",
        "fec0::/10",
        "ff00::/8",
    )
)
# Cloud instance metadata / platform endpoints. 168.63.129.16 (Azure) is a
# public address, so only an explicit entry catches it.
_METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "169.254.170.2", "100.100.100.200", "168.63.129.16", "fd00:ec2::254")
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one tunnels to, if any (mapped, NAT64, 6to4, Teredo)."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    return None


def forbidden_reason(ip: IPAddress) -> str | None:
    """Why a connection to ``ip`` must be refused, or None if it is a public address."""
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_ipv4(ip)
        if inner is not None and (reason := forbidden_reason(inner)):
            return f"{reason} (embedded in {ip})"
        if ip.scope_id:
            return "a scoped (interface-local) address"
    if ip in _METADATA_ADDRESSES:
        return "a cloud metadata address"
    checks = (
        (ip.is_loopback, "a loopback address"),
        (ip.is_link_local, "a link-local address"),
        (ip.is_multicast, "a multicast address"),
        (ip.is_unspecified, "an unspecified address"),
        (ip.is_private, "a private address"),
        (ip.is_reserved, "a reserved address"),
        (not ip.is_global, "not a public address"),
        (any(ip in net for net in _BLOCKED_NETWORKS if net.version == ip.version), "a special-use address"),
    )
    return next((reason for hit, reason in checks if hit), None)


def _parse_ip(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


async def default_resolve(host: str, port: int) -> list[str]:
    infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


@dataclass(frozen=True, slots=True)
class _Target:
    url: httpx.URL  # as the model gave it (name, not IP), fragment dropped
    host: str  # ASCII (IDNA) host, no brackets
    port: int
    ips: tuple[str, ...]  # vetted addresses, in resolver order


_SCHEMELESS = re.compile(r"^[A-Za-z0-9.-]+\.[A-Za-z]{2,}(:\d+)?(/|$)")


def _parse_url(raw: str) -> httpx.URL:
    raw = raw.strip()
    if "://" not in raw and _SCHEMELESS.match(raw):
        raw = "https://" + raw  # models often drop the scheme; https is the safe guess
    try:
        url = httpx.URL(raw)
    except (httpx.InvalidURL, ValueError, TypeError) as exc:
        raise FetchRefused(f"not a valid URL: {exc}") from None
    if url.scheme not in ("http", "https"):
        raise FetchRefused(f"only http and https URLs can be fetched, not {url.scheme or 'a relative URL'}:")
    if not url.raw_host:
        raise FetchRefused("the URL has no host")
    if url.userinfo:
        # Credentials in a model-chosen URL are either a leak or an injection.
        raise FetchRefused("URLs with a user name or password are not fetched")
    if url.port is not None and not 1 <= url.port <= 65535:
        raise FetchRefused(f"invalid port {url.port}")
    return url.copy_with(fragment=None)


class FetchPageTool:
    name = "fetch_page"
    description = (
        "Fetch a web page (http or https URL) and return its readable text: title and main "
        "content, with scripts, styles and navigation removed. Long pages are cut. Use it to "
        "read a search result before citing it."
    )

    def __init__(
        self,
        settings: FetchPageSettings | None = None,
        resolver: Resolver | None = None,
        *,
        server_addresses: Sequence[IPAddress] = (),
    ) -> None:
        self.settings = settings or FetchPageSettings()
        self._resolve: Resolver = resolver or default_resolve
        self._exempt = tuple(ipaddress.ip_network(net) for net in self.settings.allow_networks)
        # This host's interface addresses plus the ones the server is bound to.
        self.host_addresses = HostAddresses(self.settings.own_addresses_refresh_seconds, server_addresses)
        # The loop's timeout is a backstop; our own limit fires first and
        # returns a clean error.
        self.timeout = self.settings.timeout + 5.0
        self.parameters: dict[str, Any] = {
            "type": "object",
            "properties": {
                "url": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 2048,
                    "description": "Absolute http:// or https:// URL of the page.",
                }
            },
            "required": ["url"],
            "additionalProperties": False,
        }
        verify = self.settings.verify
        ssl_context = (
            ssl.create_default_context(cafile=verify if isinstance(verify, str) else certifi.where())
            if verify
            else httpx.create_ssl_context(verify=False)
        )
        self._client = httpx.AsyncClient(
            verify=ssl_context,
            timeout=httpx.Timeout(self.settings.timeout),
            follow_redirects=False,
            # No proxies from the environment: a proxy would resolve names
            # itself and undo the pinning.
            trust_env=False,
            # No pooling: a pooled connection is keyed by IP, and reusing one
            # opened (and TLS-verified) for another name would be wrong.
            limits=httpx.Limits(max_keepalive_connections=0),
            # No cookies: they would be keyed by IP and shared across fetches.
            cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def run(self, arguments: dict[str, Any], context: ToolContext) -> ToolResult:
        raw = arguments.get("url")
        if not isinstance(raw, str) or not raw.strip():
            return ToolResult.error("argument 'url' must be a non-empty string")
        try:
            with anyio.fail_after(self.settings.timeout):
                return await self._fetch(_parse_url(raw))
        except FetchRefused as exc:
            return ToolResult.error(f"refused to fetch {raw[:200]}: {exc}", url=raw[:2048], refused=True)
        except TimeoutError:
            return ToolResult.error(
                f"fetching {raw[:200]} timed out after {self.settings.timeout:g}s", url=raw[:2048]
            )
        except httpx.HTTPError as exc:
            return ToolResult.error(
                f"fetching {raw[:200]} failed: {_describe_http_error(exc)}", url=raw[:2048]
            )
        except Exception as exc:  # a tool failure must reach the model as a result, not kill the turn
            log.exception("fetch_page failed for %s", raw[:200])
            return ToolResult.error(
                f"fetching {raw[:200]} failed: {type(exc).__name__}: {exc}"[:400], url=raw[:2048]
            )

    async def _vet(self, url: httpx.URL) -> _Target:
        host = url.raw_host.decode("ascii").lower()
        port = url.port or (443 if url.scheme == "https" else 80)
        allowed_ports = self.settings.allowed_ports
        if allowed_ports and port not in allowed_ports:
            shown_ports = ", ".join(str(p) for p in allowed_ports)
            raise FetchRefused(f"port {port} is not one of the allowed ports ({shown_ports})")
        allow = self.settings.allow_private
        literal = _parse_ip(host)
        if literal is not None:
            addresses: Sequence[str] = [host]
        else:
            if not allow and (host == "localhost" or host.endswith(".localhost")):
                raise FetchRefused(f"{host} is a loopback name")
            addresses = await self._lookup(host, port)
        ips: list[str] = []
        own = frozenset() if self.settings.allow_own_addresses else await self.host_addresses.current()
        for text in addresses:
            ip = _parse_ip(text)
            if ip is None:
                raise FetchRefused(f"the resolver returned an invalid address {text!r} for {host}")
            exempt = any(ip.version == net.version and ip in net for net in self._exempt)
            shown = host if literal is not None else f"{host} resolves to {ip}, which"
            if not allow and not exempt and (reason := forbidden_reason(ip)):
                raise FetchRefused(f"{shown} is {reason}")
            # Loopback is this host too, but the loopback rule above already
            # decides it (an operator's allow_networks may open it on purpose).
            if ip in own and not ip.is_loopback:
                raise FetchRefused(f"{shown} is an address of this host")
            ips.append(str(ip))
        if not ips:
            raise FetchRefused(f"{host} has no addresses")
        return _Target(url=url, host=host, port=port, ips=tuple(dict.fromkeys(ips)))

    async def _lookup(self, host: str, port: int) -> Sequence[str]:
        try:
            if inspect.iscoroutinefunction(self._resolve):
                result = await self._resolve(host, port)
            else:
                result = await anyio.to_thread.run_sync(self._resolve, host, port, abandon_on_cancel=True)
                if inspect.isawaitable(result):
                    result = await result
        except (OSError, UnicodeError) as exc:
            raise FetchRefused(f"could not resolve {host}: {exc}") from None
        return list(result)

    async def _open(self, target: _Target) -> httpx.Response:
        """Send the GET to one of the vetted addresses, never to a fresh DNS answer."""
        default_port = 443 if target.url.scheme == "https" else 80
        host_header = f"[{target.host}]" if ":" in target.host else target.host
        if target.port != default_port:
            host_header += f":{target.port}"
        headers = {
            "Host": host_header,
            "User-Agent": self.settings.user_agent,
            "Accept": "text/html,application/xhtml+xml,text/plain;q=0.9,application/json;q=0.9,*/*;q=0.5",
        }
        extensions: dict[str, Any] = {}
        if target.url.scheme == "https" and _parse_ip(target.host) is None:
            extensions["sni_hostname"] = target.host  # also the name the certificate is checked against
        last_error: httpx.HTTPError | None = None
        for ip in target.ips[:3]:
            request = self._client.build_request(
                "GET", target.url.copy_with(host=ip), headers=headers, extensions=extensions
            )
            try:
                return await self._client.send(request, stream=True)
            except httpx.ConnectError as exc:  # try the next address, like a browser would
                last_error = exc
        assert last_error is not None
        raise last_error

    async def _fetch(self, url: httpx.URL) -> ToolResult:
        original = url
        for hop in range(self.settings.max_redirects + 1):
            try:
                target = await self._vet(url)
            except FetchRefused as exc:
                if hop == 0:
                    raise
                raise FetchRefused(f"redirect to {str(url)[:200]}: {exc}") from None
            response = await self._open(target)
            try:
                location = response.headers.get("location")
                if response.is_redirect and location:
                    if hop == self.settings.max_redirects:
                        limit = self.settings.max_redirects
                        return ToolResult.error(
                            f"too many redirects (more than {limit}) starting at {original}",
                            url=str(original),
                        )
                    try:
                        url = _parse_url(str(url.join(location)))
                    except FetchRefused as exc:
                        raise FetchRefused(f"redirect to {location[:200]}: {exc}") from None
                    except httpx.InvalidURL as exc:
                        raise FetchRefused(f"invalid redirect location {location[:200]!r}: {exc}") from None
                    continue
                return await self._read(response, url, original, hop)
            finally:
                await response.aclose()
        raise AssertionError("unreachable")

    async def _read(
        self, response: httpx.Response, url: httpx.URL, original: httpx.URL, hops: int
    ) -> ToolResult:
        settings = self.settings
        final_url = str(url)
        content_type = response.headers.get("content-type", "")
        mime = content_type.split(";", 1)[0].strip().lower()
        data: dict[str, Any] = {
            "url": final_url,
            "status": response.status_code,
            "content_type": mime,
            "redirects": hops,
        }
        if response.status_code >= 400:
            reason = response.reason_phrase or ""
            return ToolResult.error(f"HTTP {response.status_code} {reason} from {final_url}".rstrip(), **data)
        kind = _kind_of(mime)
        if kind == "binary":
            return self._describe_binary(final_url, mime, response.headers.get("content-length"), data)

        body, truncated = await _read_bounded(response, settings.max_bytes)
        data |= {"bytes": len(body), "truncated": truncated}
        if kind == "unknown":
            kind = _sniff(body)
            if kind == "binary":
                return self._describe_binary(final_url, mime or "unknown type", str(len(body)), data)
        text = _decode(body, content_type, truncated, html=kind == "html")
        title = ""
        if kind == "html":
            title, text = await anyio.to_thread.run_sync(_html_to_text, text, abandon_on_cancel=True)
        elif kind == "json" and not truncated:
            text = _pretty_json(text, settings.max_chars)
        text, cut = _clip(text, settings.max_chars)
        data |= {"title": title, "chars": len(text)}

        header = [f"URL: {final_url}"]
        if url != original:
            header.append(f"Redirected from: {original}")
        header.append(f"Title: {title or '(none)'}")
        notes = []
        if truncated:
            notes.append(
                f"the page is larger than {settings.max_bytes:,} bytes; only the first part was read"
            )
        if cut:
            notes.append(f"text cut to {settings.max_chars:,} characters")
        if notes:
            header.append("Note: " + "; ".join(notes))
        content = "\n".join(header) + "\n\n" + (text or "(no readable text)")
        return ToolResult(content=content, data=data, sources=[Source(url=final_url, title=title)])

    def _describe_binary(self, url: str, mime: str, length: str | None, data: dict[str, Any]) -> ToolResult:
        size = f"{int(length):,} bytes" if length and length.isdigit() else "unknown size"
        data |= {"bytes": int(length) if length and length.isdigit() else None, "binary": True}
        content = (
            f"URL: {url}\nType: {mime}, {size}\n\n"
            f"This is a {mime} file, not a text page; fetch_page does not show its content."
        )
        return ToolResult(content=content, data=data, sources=[Source(url=url)])


def _describe_http_error(exc: httpx.HTTPError) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return "the server did not answer in time"
    if isinstance(exc, httpx.ConnectError):
        return f"could not connect ({exc})"[:300]
    return f"{type(exc).__name__}: {exc}"[:300]


_TEXT_TYPES = {
    "application/javascript",
    "application/xml",
    "application/x-yaml",
    "application/yaml",
    "application/rss+xml",
    "application/atom+xml",
    "application/x-sh",
    "application/toml",
}


def _kind_of(mime: str) -> str:
    if mime in ("text/html", "application/xhtml+xml"):
        return "html"
    if mime == "application/json" or mime.endswith("+json"):
        return "json"
    if mime.startswith("text/") or mime in _TEXT_TYPES or mime.endswith("+xml"):
        return "text"
    if not mime:
        return "unknown"
    return "binary"


def _sniff(head: bytes) -> str:
    sample = head[:1024]
    if b"\x00" in sample:
        return "binary"
    lowered = sample.lstrip().lower()
    if lowered.startswith((b"<!doctype html", b"<html")) or b"<body" in lowered:
        return "html"
    return "text"


async def _read_bounded(response: httpx.Response, limit: int) -> tuple[bytes, bool]:
    """Read at most ``limit`` decoded bytes, then stop reading and let the connection close."""
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > limit:
            return bytes(body[:limit]), True
    return bytes(body), False


_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.IGNORECASE)


def _decode(body: bytes, content_type: str, truncated: bool, *, html: bool) -> str:
    charset = None
    match = re.search(r"charset\s*=\s*[\"']?([A-Za-z0-9_.:-]+)", content_type, re.IGNORECASE)
    if match:
        charset = match.group(1)
    elif body.startswith(codecs.BOM_UTF8):
        charset = "utf-8-sig"
    elif html and (meta := _META_CHARSET.search(body[:4096])):
        charset = meta.group(1).decode("ascii")
    candidates = [charset] if charset else ["utf-8", "cp1252"]
    for name in candidates:
        try:
            decoder = codecs.getincrementaldecoder(name)(
                errors="strict" if name == "utf-8" and not charset else "replace"
            )
            # final=False when cut short: a multi-byte character split by the
            # cut is dropped instead of becoming garbage.
            return decoder.decode(body, final=not truncated)
        except LookupError:
            continue
        except UnicodeDecodeError:
            continue
    return body.decode("utf-8", errors="replace")


def _pretty_json(text: str, max_chars: int) -> str:
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return text
    pretty = json.dumps(value, indent=2, ensure_ascii=False)
    # Indentation can multiply the size of dense JSON; fall back to compact
    # rather than spend the character budget on spaces.
    return pretty if len(pretty) <= max_chars else json.dumps(value, ensure_ascii=False)


def _clip(text: str, max_chars: int) -> tuple[str, bool]:
    if len(text) <= max_chars:
        return text, False
    cut = text[:max_chars]
    space = cut.rfind(" ", max_chars - 200)
    return (cut[:space] if space > 0 else cut).rstrip() + " […]", True


# fmt: off
# Never part of the readable text.
_SKIP_TAGS = frozenset({
    "script", "style", "noscript", "template", "svg", "math", "canvas", "iframe", "object", "embed",
    "head", "button", "select", "option", "textarea", "input", "dialog",
})
# Page chrome dropped when no <main>/<article> tells us where the content is.
_CHROME_TAGS = frozenset({"nav", "header", "footer", "aside"})
# Line breaks around these; paragraph breaks (a blank line) around the second set.
_BLOCK_TAGS = frozenset({
    "address", "aside", "body", "caption", "dd", "div", "dt", "fieldset", "figcaption", "form", "li",
    "nav", "summary", "tr",
})
_PARAGRAPH_TAGS = frozenset({
    "article", "blockquote", "details", "dl", "figure", "footer", "h1", "h2", "h3", "h4", "h5", "h6",
    "header", "hr", "main", "ol", "p", "section", "table", "ul",
})
# fmt: on
_PARA = "\x01"  # a paragraph break, resolved by _tidy into at most one blank line
_PRE_MARK = "\x00"  # tags lines from <pre> so _tidy keeps their indentation


def _html_to_text(html: str) -> tuple[str, str]:
    """(title, readable text) of an HTML document."""
    # libxml2 rather than an HTML5 parser: lexbor (selectolax) went quadratic
    # on deeply nested blocks (a 400 kB page of nested <li> took 8 s of
    # uncancellable CPU); libxml2 stays linear and gives up past depth 2048.
    parser = lxml_html.HTMLParser(
        remove_comments=True, remove_pis=True, no_network=True, encoding="utf-8", huge_tree=True
    )
    try:
        doc = lxml_html.document_fromstring(html.encode("utf-8", "replace"), parser=parser)
    except (etree.ParserError, ValueError):
        return "", ""
    title_node = doc.find(".//title")
    title = " ".join((title_node.text_content() if title_node is not None else "").split())
    if not title:
        og = doc.xpath('string(//meta[@property="og:title"]/@content)')
        title = " ".join(str(og).split())
    root = _main_content(doc)
    if root is None:
        return title[:300], ""
    if not title and (h1 := root.find(".//h1")) is not None:
        title = " ".join(h1.text_content().split())
    return title[:300], _render(root, drop_chrome=root.tag == "body")


def _visible_length(node: lxml_html.HtmlElement) -> int:
    return len("".join(node.itertext()).split())


def _main_content(doc: lxml_html.HtmlElement) -> lxml_html.HtmlElement | None:
    body = doc.find("body")
    candidates = doc.xpath("//main | //*[@role='main']") or doc.xpath("//article")
    if candidates:
        best = max(candidates, key=_visible_length)
        # A tiny <main> (a cookie notice, an app shell) is worse than the whole body.
        if body is None or _visible_length(best) >= 30 or _visible_length(body) < 60:
            return best
    return body if body is not None else doc


def _render(root: lxml_html.HtmlElement, *, drop_chrome: bool) -> str:
    parts: list[str] = []
    # An explicit stack of elements still to visit and strings to emit: pages
    # nest deeper than Python's recursion limit allows.
    stack: list[lxml_html.HtmlElement | str] = [root]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            parts.append(item)
            continue
        tail = _inline(item.tail or "") if item is not root else ""
        tag = item.tag if isinstance(item.tag, str) else ""
        if not tag or tag in _SKIP_TAGS or (drop_chrome and tag in _CHROME_TAGS) or _hidden(item):
            parts.append(tail)  # the text after a skipped element still belongs to its parent
            continue
        if tag == "br":
            parts.append("\n" + tail)
            continue
        if tag == "pre":
            lines = item.text_content().splitlines()
            parts.append(f"\n{_PARA}\n" + "\n".join(_PRE_MARK + line for line in lines) + f"\n{_PARA}\n")
            parts.append(tail)
            continue
        opening, closing = "", ""
        if tag in _PARAGRAPH_TAGS:
            opening, closing = f"\n{_PARA}\n", f"\n{_PARA}\n"
        elif tag in _BLOCK_TAGS:
            opening, closing = "\n", "\n"
        if tag == "li":
            opening += "- "
        elif tag in ("h1", "h2", "h3", "h4", "h5", "h6"):
            opening += "#" * int(tag[1]) + " "
        elif tag in ("td", "th"):
            closing = " | "
        parts.append(opening + _inline(item.text or ""))
        stack.append(closing + tail)
        stack.extend(reversed(item))
    return _tidy("".join(parts))


def _hidden(node: lxml_html.HtmlElement) -> bool:
    return node.get("hidden") is not None or node.get("aria-hidden") == "true"


_SPACES = re.compile(r"[ \t\r\f\v\u00a0]+|\n")


def _inline(text: str) -> str:
    # Source newlines inside running text are just spaces; block structure
    # comes from the tags.
    return _SPACES.sub(" ", text)


def _tidy(text: str) -> str:
    lines: list[str] = []
    pending_break = False
    for raw in text.split("\n"):
        if raw.startswith(_PRE_MARK):
            line = raw[1:].rstrip()
        else:
            line = " ".join(raw.split()).strip(" |")
            if line == _PARA:
                pending_break = bool(lines)
                continue
            if line in ("-", "#", "##", "###", "####", "#####", "######"):
                continue
            if not line:
                continue
        if pending_break:
            lines.append("")
            pending_break = False
        lines.append(line)
    return "\n".join(lines).strip("\n")
