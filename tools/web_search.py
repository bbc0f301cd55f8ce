"""The ``web_search`` built-in tool: DuckDuckGo (and friends) via ``ddgs``, or a SearXNG instance.

Backends only fetch hits; bounding, de-duplication, caching and turning every
failure into a :class:`ToolResult` error happen here once, so a new backend
cannot let an exception or an oversized snippet through to the model.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar, Literal, Protocol

import anyio
import httpx

from toolrelay.app.settings import WebSearchSettings
from toolrelay.tools.base import Source, ToolContext, ToolResult

log = logging.getLogger(__name__)

TimeRange = Literal["day", "week", "month", "year"]
TIME_RANGES: tuple[TimeRange, ...] = ("day", "week", "month", "year")
_REGION_PATTERN = "^[a-z]{2}-[a-z]{2}$"


def _is_region(value: object) -> bool:
    return isinstance(value, str) and re.fullmatch(_REGION_PATTERN, value) is not None


@dataclass(frozen=True, slots=True)
class SearchHit:
    title: str
    url: str
    snippet: str = ""


class SearchError(Exception):
    """A backend failure the model should hear about; the message is model-facing."""


class SearchBackend(Protocol):
    name: str

    async def search(self, query: str, max_results: int, region: str | None, timelimit: TimeRange | None) -> list[SearchHit]: ...


class DdgsBackend:
    """Search through the ``ddgs`` metasearch library (sync; runs in a worker thread)."""

    name = "ddgs"
    _TIMELIMITS: ClassVar[dict[str, str]] = {"day": "d", "week": "w", "month": "m", "year": "y"}

    def __init__(
        self,
        *,
        engines: str = "auto",
        safesearch: str = "moderate",
        timeout: float = 15.0,
        proxy: str | None = None,
        verify: bool | str = True,
    ) -> None:
        self._engines = engines
        self._safesearch = safesearch
        self._timeout = timeout
        self._proxy = proxy
        self._verify = verify

    async def search(self, query: str, max_results: int, region: str | None, timelimit: TimeRange | None) -> list[SearchHit]:
        call = partial(self._search_sync, query, max_results, region or "us-en", timelimit)
        # abandon_on_cancel: on our timeout the caller gets its answer now; the
        # thread ends on its own once ddgs' own timeout fires.
        return await anyio.to_thread.run_sync(call, abandon_on_cancel=True)

    def _search_sync(self, query: str, max_results: int, region: str, timelimit: TimeRange | None) -> list[SearchHit]:
        # Imported here: importing ddgs loads every engine module (and lxml),
        # which a server configured for SearXNG never needs.
        from ddgs import DDGS
        from ddgs.exceptions import DDGSException, RatelimitException, TimeoutException

        # A fresh client per search: ddgs clients are not documented as
        # thread-safe, and each one picks a new browser fingerprint.
        client = DDGS(proxy=self._proxy, timeout=max(1, math.ceil(self._timeout)), verify=self._verify)
        try:
            rows = client.text(
                query,
                region=region,
                safesearch=self._safesearch,
                timelimit=self._TIMELIMITS[timelimit] if timelimit else None,
                max_results=max_results,
                backend=self._engines,
            )
        except RatelimitException as exc:
            raise SearchError(f"the search engines are rate limiting us (ddgs: {exc}); try again later") from None
        except TimeoutException:
            raise SearchError("the search engines did not answer in time (ddgs)") from None
        except DDGSException as exc:
            # ddgs says this both for a real empty result and when every engine
            # answered with a non-200 page (DuckDuckGo's rate limit looks like
            # that); it gives us no way to tell them apart.
            if str(exc).startswith("No results found"):
                return []
            raise SearchError(f"search failed (ddgs): {str(exc)[:300]}") from None
        return [
            SearchHit(
                title=str(row.get("title") or ""),
                url=str(row.get("href") or ""),
                snippet=str(row.get("body") or ""),
            )
            for row in rows
            if isinstance(row, dict)
        ]

    async def aclose(self) -> None:
        pass


def searxng_language(region: str) -> str:
    """``us-en`` (DuckDuckGo style) to ``en-US`` (SearXNG style); ``wt-wt`` means all languages."""
    country, _, lang = region.partition("-")
    if region == "wt-wt" or not lang:
        return "all"
    country = "GB" if country == "uk" else country.upper()  # DuckDuckGo says uk, ISO says GB
    return f"{lang}-{country}"


class SearxngBackend:
    """Search through a SearXNG instance's JSON API (``/search?format=json``)."""

    name = "searxng"
    _SAFESEARCH: ClassVar[dict[str, str]] = {"off": "0", "moderate": "1", "on": "2"}

    def __init__(
        self,
        base_url: str,
        *,
        safesearch: str = "moderate",
        timeout: float = 15.0,
        verify: bool | str = True,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self._url = base_url.rstrip("/") + "/search"
        self._safesearch = self._SAFESEARCH.get(safesearch, "1")
        self._timeout = timeout
        self._own_client = client is None
        self._client = client or httpx.AsyncClient(timeout=httpx.Timeout(timeout), verify=verify)

    async def search(self, query: str, max_results: int, region: str | None, timelimit: TimeRange | None) -> list[SearchHit]:
        params = {"q": query, "format": "json", "safesearch": self._safesearch, "pageno": "1"}
        if region:
            params["language"] = searxng_language(region)
        if timelimit:
            params["time_range"] = timelimit
        try:
            response = await self._client.get(self._url, params=params, headers={"Accept": "application/json"})
        except httpx.TimeoutException:
            raise SearchError(f"SearXNG did not answer within {self._timeout:g}s") from None
        except httpx.HTTPError as exc:
            raise SearchError(f"could not reach SearXNG: {type(exc).__name__}: {str(exc)[:200]}") from None
        status = response.status_code
        if status == 429:
            raise SearchError("SearXNG is rate limiting us (HTTP 429); try again later")
        if status == 403:
            raise SearchError("SearXNG refused the request (HTTP 403); is 'json' listed in search.formats of its settings.yml?")
        if status >= 500:
            raise SearchError(f"SearXNG failed (HTTP {status})")
        if status != 200:
            raise SearchError(f"SearXNG answered HTTP {status}")
        try:
            payload = response.json()
        except ValueError:
            raise SearchError("SearXNG did not return JSON (is searxng_url right?)") from None
        results = payload.get("results") if isinstance(payload, dict) else None
        if not isinstance(results, list):
            raise SearchError("SearXNG returned JSON without a results list")
        hits = [
            SearchHit(title=str(item.get("title") or ""), url=item["url"], snippet=str(item.get("content") or ""))
            for item in results
            if isinstance(item, dict) and isinstance(item.get("url"), str)
        ]
        if not hits and (failed := payload.get("unresponsive_engines")):
            # Every upstream engine failed (often rate limits): that is an
            # outage, not "nothing matches", and the model should know.
            names = ", ".join(" ".join(map(str, entry)) if isinstance(entry, list) else str(entry) for entry in failed[:5])
            raise SearchError(f"SearXNG returned no results; its engines failed: {names[:300]}")
        return hits

    async def aclose(self) -> None:
        if self._own_client:
            await self._client.aclose()


class _TtlCache:
    """A small LRU with expiry; only successful, non-empty searches go in."""

    def __init__(self, size: int, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._size = size
        self._ttl = ttl
        self._clock = clock
        self._items: OrderedDict[tuple[Any, ...], tuple[float, list[SearchHit]]] = OrderedDict()

    def get(self, key: tuple[Any, ...]) -> list[SearchHit] | None:
        entry = self._items.get(key)
        if entry is None:
            return None
        if entry[0] <= self._clock():
            del self._items[key]
            return None
        self._items.move_to_end(key)
        return entry[1]

    def put(self, key: tuple[Any, ...], hits: list[SearchHit]) -> None:
        if self._size <= 0 or self._ttl <= 0:
            return
        self._items[key] = (self._clock() + self._ttl, hits)
        self._items.move_to_end(key)
        while len(self._items) > self._size:
            self._items.popitem(last=False)


def _bound(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def make_backend(settings: WebSearchSettings) -> SearchBackend:
    if settings.backend == "searxng":
        assert settings.searxng_url is not None  # noqa: S101 (narrows: the settings loader requires it for searxng)
        return SearxngBackend(
            settings.searxng_url,
            safesearch=settings.safesearch,
            timeout=settings.timeout,
            verify=settings.verify,
        )
    return DdgsBackend(
        engines=settings.ddgs_engines,
        safesearch=settings.safesearch,
        timeout=settings.timeout,
        proxy=settings.proxy,
        verify=settings.verify,
    )


class WebSearchTool:
    name = "web_search"
    description = (
        "Search the web. Returns up to max_results hits, each with a title, URL and short snippet. "
        "Snippets are short: use fetch_page on a result to read it before relying on it, and cite the URLs."
    )

    def __init__(
        self,
        settings: WebSearchSettings | None = None,
        backend: SearchBackend | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings or WebSearchSettings()
        self.backend: SearchBackend = backend or make_backend(self.settings)
        self.timeout = self.settings.timeout + 5.0  # backstop; ours fires first with a clean error
        self._cache = _TtlCache(self.settings.cache_size, self.settings.cache_ttl_seconds, clock)
        self.parameters: dict[str, Any] = {
            "type": "object",
            "properties": {
                "query": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 400,
                    "description": "What to search for.",
                },
                "max_results": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": self.settings.max_results_cap,
                    "description": f"How many results (default {self.settings.max_results}).",
                },
                "region": {
                    "type": "string",
                    "pattern": _REGION_PATTERN,
                    "description": "Country-language code such as us-en, de-de, fr-fr; wt-wt for no region.",
                },
                "time_range": {
                    "type": "string",
                    "enum": list(TIME_RANGES),
                    "description": "Only results from the last day, week, month or year.",
                },
            },
            "required": ["query"],
            "additionalProperties": False,
        }

    async def aclose(self) -> None:
        close = getattr(self.backend, "aclose", None)
        if close is not None:
            await close()

    def _arguments(self, arguments: dict[str, Any]) -> tuple[str, int, str, TimeRange | None]:
        # The loop validates against the schema already; this keeps a direct
        # call (or a schema-less caller) from reaching a backend with junk.
        query = arguments.get("query")
        if not isinstance(query, str) or not query.strip():
            raise ValueError("argument 'query' must be a non-empty string")
        query = " ".join(query.split())[:400]
        count = arguments.get("max_results", self.settings.max_results)
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= self.settings.max_results_cap:
            raise ValueError(f"argument 'max_results' must be an integer from 1 to {self.settings.max_results_cap}")
        region = arguments.get("region") or self.settings.region
        if not _is_region(region):
            raise ValueError("argument 'region' must look like us-en (country-language)")
        time_range = arguments.get("time_range")
        if time_range is not None and time_range not in TIME_RANGES:
            raise ValueError("argument 'time_range' must be one of day, week, month, year")
        return query, count, region, time_range

    async def run(self, arguments: dict[str, Any], context: ToolContext) -> ToolResult:
        try:
            query, count, region, time_range = self._arguments(arguments)
        except ValueError as exc:
            return ToolResult.error(str(exc))
        backend = self.backend.name
        key = (backend, query, count, region, time_range)
        hits = self._cache.get(key)
        cached = hits is not None
        if hits is None:
            try:
                with anyio.fail_after(self.settings.timeout):
                    raw = await self.backend.search(query, count, region, time_range)
            except TimeoutError:
                return ToolResult.error(f"web search timed out after {self.settings.timeout:g}s ({backend})", backend=backend)
            except SearchError as exc:
                return ToolResult.error(str(exc), backend=backend)
            except Exception as exc:  # a backend bug must not end the agent's turn
                log.exception("web_search backend %s failed", backend)
                return ToolResult.error(f"web search failed ({backend}): {type(exc).__name__}: {str(exc)[:300]}", backend=backend)
            hits = self._clean(raw, count)
            if hits:
                self._cache.put(key, hits)
        return self._result(query, hits, backend, cached)

    def _clean(self, raw: list[SearchHit], count: int) -> list[SearchHit]:
        s = self.settings
        seen: set[str] = set()
        hits: list[SearchHit] = []
        for hit in raw:
            url = hit.url.strip()
            if not url.lower().startswith(("http://", "https://")) or len(url) > s.max_url_chars or url in seen:
                continue
            seen.add(url)
            title = _bound(hit.title, s.max_title_chars) or url[: s.max_title_chars]
            hits.append(SearchHit(title=title, url=url, snippet=_bound(hit.snippet, s.max_snippet_chars)))
            if len(hits) >= count:
                break
        return hits

    @staticmethod
    def _result(query: str, hits: list[SearchHit], backend: str, cached: bool) -> ToolResult:
        data = {"backend": backend, "results": len(hits), "cached": cached}
        if not hits:
            note = " (with ddgs this can also mean the engines refused us, e.g. rate limiting)" if backend == "ddgs" else ""
            return ToolResult(content=f'No results for "{query}"{note}.', data=data)
        blocks = [f'Results for "{query}":']
        for number, hit in enumerate(hits, start=1):
            blocks.append(f"[{number}] {hit.title}\n{hit.url}" + (f"\n{hit.snippet}" if hit.snippet else ""))
        return ToolResult(
            content="\n\n".join(blocks),
            data=data,
            sources=[Source(url=hit.url, title=hit.title, snippet=hit.snippet) for hit in hits],
        )
