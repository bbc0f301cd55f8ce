"""fetch_page's HTTP fetch: one GET per hop to a vetted address only, redirects by hand, bounded reads.

Connections go to the addresses :class:`~toolrelay.tools.network_guard.NetworkGuard`
vetted (the URL is rewritten to the IP while Host and TLS SNI/certificate
checks keep the original name); redirects are followed here, one hop at a
time, so each hop is vetted again. Bodies are read up to ``max_bytes``; the
whole fetch is bounded by the caller's timeout.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any

import certifi
import httpx

from toolrelay.app.settings import FetchPageSettings
from toolrelay.tools.network_guard import FetchRefused, NetworkGuard, VettedTarget, parse_ip, parse_url

__all__ = ["FetchedPage", "PageFetcher", "TooManyRedirects", "describe_http_error", "read_bounded"]


class TooManyRedirects(Exception):
    """More hops than ``max_redirects``; ``args[0]`` is the URL the fetch started at."""


@dataclass(slots=True)
class FetchedPage:
    """The last hop's answer; ``body`` is None when it was not read (an error status, or unwanted)."""

    url: httpx.URL
    hops: int
    status: int
    reason: str
    headers: httpx.Headers
    body: bytes | None = None
    truncated: bool = False
    content_type: str = field(default="")


class PageFetcher:
    """The HTTP client of fetch_page: no pooling, no cookies, no proxies from the environment."""

    def __init__(self, settings: FetchPageSettings, guard: NetworkGuard) -> None:
        self.settings = settings
        self.guard = guard
        verify = self.settings.verify
        ssl_context = (
            ssl.create_default_context(cafile=verify if isinstance(verify, str) else certifi.where()) if verify else httpx.create_ssl_context(verify=False)
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

    async def fetch(self, url: httpx.URL, *, wants_body: Callable[[str], bool]) -> FetchedPage:
        """GET ``url``, following redirects; reads the body when ``wants_body(mime)`` says so.

        Raises :class:`FetchRefused` (a hop the guard refuses), :class:`TooManyRedirects`
        and ``httpx.HTTPError``.
        """
        original = url
        for hop in range(self.settings.max_redirects + 1):
            try:
                target = await self.guard.vet(url)
            except FetchRefused as exc:
                if hop == 0:
                    raise
                raise FetchRefused(f"redirect to {str(url)[:200]}: {exc}") from None
            response = await self._open(target)
            try:
                location = response.headers.get("location")
                if response.is_redirect and location:
                    if hop == self.settings.max_redirects:
                        raise TooManyRedirects(original)
                    try:
                        url = parse_url(str(url.join(location)))
                    except FetchRefused as exc:
                        raise FetchRefused(f"redirect to {location[:200]}: {exc}") from None
                    except httpx.InvalidURL as exc:
                        raise FetchRefused(f"invalid redirect location {location[:200]!r}: {exc}") from None
                    continue
                content_type = response.headers.get("content-type", "")
                page = FetchedPage(
                    url=url,
                    hops=hop,
                    status=response.status_code,
                    reason=response.reason_phrase or "",
                    headers=response.headers,
                    content_type=content_type,
                )
                mime = content_type.split(";", 1)[0].strip().lower()
                if response.status_code < 400 and wants_body(mime):
                    page.body, page.truncated = await read_bounded(response, self.settings.max_bytes)
                return page
            finally:
                await response.aclose()
        raise AssertionError("unreachable")

    async def _open(self, target: VettedTarget) -> httpx.Response:
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
        if target.url.scheme == "https" and parse_ip(target.host) is None:
            extensions["sni_hostname"] = target.host  # also the name the certificate is checked against
        last_error: httpx.HTTPError | None = None
        for ip in target.ips[:3]:
            request = self._client.build_request("GET", target.url.copy_with(host=ip), headers=headers, extensions=extensions)
            try:
                return await self._client.send(request, stream=True)
            except httpx.ConnectError as exc:  # try the next address, like a browser would
                last_error = exc
        assert last_error is not None  # noqa: S101 (narrows: the loop ran at least once)
        raise last_error


async def read_bounded(response: httpx.Response, limit: int) -> tuple[bytes, bool]:
    """Read at most ``limit`` decoded bytes, then stop reading and let the connection close."""
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > limit:
            return bytes(body[:limit]), True
    return bytes(body), False


def describe_http_error(exc: httpx.HTTPError) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return "the server did not answer in time"
    if isinstance(exc, httpx.ConnectError):
        return f"could not connect ({exc})"[:300]
    return f"{type(exc).__name__}: {exc}"[:300]
