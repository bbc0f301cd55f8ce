"""The ``fetch_page`` built-in tool: GET one web page and return its readable text.

Three parts, one concern each: :mod:`toolrelay.tools.network_guard` decides
which addresses a model-chosen URL may reach (SSRF: public addresses only,
allowed ports, never this host), :mod:`toolrelay.tools.page_fetch` connects
to the vetted address only and follows redirects by hand so each hop is
vetted again, and :mod:`toolrelay.tools.page_text` turns the body into
readable text. This module is the tool: arguments, limits and the result the
model reads.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import anyio
import httpx

from toolrelay.app.settings import FetchPageSettings
from toolrelay.tools.base import Source, ToolContext, ToolResult
from toolrelay.tools.network_guard import (
    FetchRefused,
    IPAddress,
    NetworkGuard,
    Resolver,
    default_resolve,
    forbidden_reason,
    parse_url,
)
from toolrelay.tools.page_fetch import FetchedPage, PageFetcher, TooManyRedirects, describe_http_error
from toolrelay.tools.page_text import clip, decode, html_to_text, kind_of, pretty_json, sniff

__all__ = ["FetchPageSettings", "FetchPageTool", "FetchRefused", "default_resolve", "forbidden_reason"]

log = logging.getLogger(__name__)


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
        self.guard = NetworkGuard(self.settings, resolver, server_addresses=server_addresses)
        self.host_addresses = self.guard.host_addresses
        self.fetcher = PageFetcher(self.settings, self.guard)
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

    @property
    def _resolve(self) -> Resolver:
        """The guard's resolver (tests swap it on a running tool)."""
        return self.guard.resolve

    @_resolve.setter
    def _resolve(self, resolver: Resolver) -> None:
        self.guard.resolve = resolver

    async def aclose(self) -> None:
        await self.fetcher.aclose()

    async def run(self, arguments: dict[str, Any], context: ToolContext) -> ToolResult:
        raw = arguments.get("url")
        if not isinstance(raw, str) or not raw.strip():
            return ToolResult.error("argument 'url' must be a non-empty string")
        try:
            with anyio.fail_after(self.settings.timeout):
                return await self._fetch(parse_url(raw))
        except FetchRefused as exc:
            return ToolResult.error(f"refused to fetch {raw[:200]}: {exc}", url=raw[:2048], refused=True)
        except TimeoutError:
            return ToolResult.error(f"fetching {raw[:200]} timed out after {self.settings.timeout:g}s", url=raw[:2048])
        except httpx.HTTPError as exc:
            return ToolResult.error(f"fetching {raw[:200]} failed: {describe_http_error(exc)}", url=raw[:2048])
        except Exception as exc:  # a tool failure must reach the model as a result, not kill the turn
            log.exception("fetch_page failed for %s", raw[:200])
            return ToolResult.error(f"fetching {raw[:200]} failed: {type(exc).__name__}: {exc}"[:400], url=raw[:2048])

    async def _fetch(self, url: httpx.URL) -> ToolResult:
        try:
            page = await self.fetcher.fetch(url, wants_body=lambda mime: kind_of(mime) != "binary")
        except TooManyRedirects:
            limit = self.settings.max_redirects
            return ToolResult.error(f"too many redirects (more than {limit}) starting at {url}", url=str(url))
        return await self._read(page, url)

    async def _read(self, page: FetchedPage, original: httpx.URL) -> ToolResult:
        settings = self.settings
        url = page.url
        final_url = str(url)
        content_type = page.content_type
        mime = content_type.split(";", 1)[0].strip().lower()
        data: dict[str, Any] = {
            "url": final_url,
            "status": page.status,
            "content_type": mime,
            "redirects": page.hops,
        }
        if page.status >= 400:
            return ToolResult.error(f"HTTP {page.status} {page.reason} from {final_url}".rstrip(), **data)
        kind = kind_of(mime)
        if kind == "binary" or page.body is None:
            return self._describe_binary(final_url, mime, page.headers.get("content-length"), data)

        body, truncated = page.body, page.truncated
        data |= {"bytes": len(body), "truncated": truncated}
        if kind == "unknown":
            kind = sniff(body)
            if kind == "binary":
                return self._describe_binary(final_url, mime or "unknown type", str(len(body)), data)
        text = decode(body, content_type, truncated, html=kind == "html")
        title = ""
        if kind == "html":
            title, text = await anyio.to_thread.run_sync(html_to_text, text, abandon_on_cancel=True)
        elif kind == "json" and not truncated:
            text = pretty_json(text, settings.max_chars)
        text, cut = clip(text, settings.max_chars)
        data |= {"title": title, "chars": len(text)}

        header = [f"URL: {final_url}"]
        if url != original:
            header.append(f"Redirected from: {original}")
        header.append(f"Title: {title or '(none)'}")
        notes = []
        if truncated:
            notes.append(f"the page is larger than {settings.max_bytes:,} bytes; only the first part was read")
        if cut:
            notes.append(f"text cut to {settings.max_chars:,} characters")
        if notes:
            header.append("Note: " + "; ".join(notes))
        content = "\n".join(header) + "\n\n" + (text or "(no readable text)")
        return ToolResult(content=content, data=data, sources=[Source(url=final_url, title=title)])

    def _describe_binary(self, url: str, mime: str, length: str | None, data: dict[str, Any]) -> ToolResult:
        size = f"{int(length):,} bytes" if length and length.isdigit() else "unknown size"
        data |= {"bytes": int(length) if length and length.isdigit() else None, "binary": True}
        content = f"URL: {url}\nType: {mime}, {size}\n\nThis is a {mime} file, not a text page; fetch_page does not show its content."
        return ToolResult(content=content, data=data, sources=[Source(url=url)])
