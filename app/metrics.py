"""Prometheus metrics: requests, latency, time to first token, requests in flight, tokens, tool calls, upstream attempts.

Plain counters in this process, rendered in the Prometheus text format at
``GET /metrics``; recording one request is a handful of dict updates. Under
``--workers N`` the worker that answers a scrape adds its siblings' counts,
asked for at scrape time (:mod:`toolrelay.app.metrics_workers`), so the hot
path stays these dict updates. Labels are bounded: the path label is the matched route's template
(one "other" for paths no route matched: 20,000 random paths once grew
/metrics to 42 MB), model ids come from the server's own routing table (and
at most ``_MAX_MODELS`` of them, since a prefix route serves any suffix),
status codes and modes are few.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

from toolrelay.app.middleware import RequestInfo
from toolrelay.app.model_ids import canonical_model_id, split_agent_model

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
_OTHER = "other"
# Requests counted: the model-serving API (chat, Responses, embeddings, legacy
# completions, MCP), by the routes' own templates; health, metrics and admin are not.
_API_PREFIXES = tuple(prefix + name for prefix in ("/v1/", "/") for name in ("chat/", "responses", "embeddings", "completions", "mcp"))
_MAX_MODELS = 256


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    def __init__(self, is_served: Callable[[str], bool] | None = None) -> None:
        self.started = time.time()
        # Bounds the model label to ids the server routes (an unknown id would
        # otherwise let any client grow the label set).
        self._is_served = is_served
        self._models: set[str] = set()
        self.requests: dict[tuple[str, str, str, int], int] = defaultdict(int)
        self.tokens: dict[tuple[str, str], int] = defaultdict(int)
        self.latency_counts: dict[str, list[int]] = {}
        self.latency_sums: dict[str, float] = defaultdict(float)
        self.tool_calls: dict[tuple[str, str], int] = defaultdict(int)
        self.tool_seconds: dict[str, float] = defaultdict(float)
        # Streamed responses: request to the first byte (sent once the upstream's first event is in), by mode.
        self.ttft_counts: dict[str, list[int]] = {}
        self.ttft_sums: dict[str, float] = defaultdict(float)
        # HTTP requests being served (every path); the ASGI layer adds one, record_request takes it back.
        self.inflight = 0
        # Counters kept by their owners (the failover router's attempts): name -> (help, label names, counts).
        self._counters: dict[str, tuple[str, tuple[str, ...], dict[tuple[str, ...], int]]] = {}
        # This process's gauges kept by their owners (breaker states), rendered as they are.
        self._line_sources: list[Callable[[], list[str]]] = []
        # Set under --workers N: the other workers' snapshots, asked for at scrape time.
        self.siblings: Callable[[], Awaitable[list[dict[str, Any]]]] | None = None

    def add_lines(self, source: Callable[[], list[str]]) -> None:
        """Render ``source()``'s exposition lines (with their HELP/TYPE) in every scrape (this process's view only)."""
        self._line_sources.append(source)

    def add_counter(self, name: str, help_text: str, labels: tuple[str, ...], counts: dict[tuple[str, ...], int]) -> None:
        """Render ``counts`` (kept up to date by its owner) as counter ``name``, summed over workers."""
        self._counters[name] = (help_text, labels, counts)

    def _model_label(self, model: str | None) -> str:
        if not model:
            return ""
        model = canonical_model_id(model)  # agent:<m> and agent/<m> are one series
        if model in self._models:
            return model
        if len(self._models) >= _MAX_MODELS or (self._is_served is not None and not self._is_served(split_agent_model(model)[1])):
            return _OTHER
        self._models.add(model)
        return model

    def record_request(self, scope: dict[str, Any], info: RequestInfo, latency: float) -> None:
        """Count one request; ``scope`` is the ASGI scope after routing (Litestar sets ``path_template``)."""
        self.inflight -= 1
        template = scope.get("path_template") if scope.get("route_handler") is not None else None
        if template:
            if not template.startswith(_API_PREFIXES):
                return
            path = template
        elif str(scope.get("path", "")).startswith(_API_PREFIXES):
            path = _OTHER  # no route matched: the path is the client's text
        else:
            return
        mode = info.mode or "none"
        model = self._model_label(info.model)
        self.requests[(path, mode, model, info.status)] += 1
        _observe(self.latency_counts, mode, latency)
        self.latency_sums[mode] += latency
        if info.prompt_tokens:
            self.tokens[(model, "prompt")] += info.prompt_tokens
        if info.completion_tokens:
            self.tokens[(model, "completion")] += info.completion_tokens

    def response_started(self, info: RequestInfo, headers: Any) -> None:
        """A response starts; a streamed one (``text/event-stream``) once the upstream's first event has arrived
        (the handlers pull it before answering), so its delay is the time to first token toolrelay adds to the upstream's."""
        for name, value in headers:
            if name == b"content-type":
                if value.startswith(b"text/event-stream"):
                    self._first_byte(info)
                return

    def _first_byte(self, info: RequestInfo) -> None:
        mode = info.mode or "none"
        seconds = time.perf_counter() - info.started
        _observe(self.ttft_counts, mode, seconds)
        self.ttft_sums[mode] += seconds

    def record_tool(self, name: str, status: str, seconds: float) -> None:
        self.tool_calls[(name, status)] += 1
        self.tool_seconds[name] += seconds

    def snapshot(self) -> dict[str, Any]:
        """This process's counts as JSON-able data, for the worker that answers a scrape."""
        return {
            "requests": [[*key, n] for key, n in self.requests.items()],
            "latency": {mode: [counts, self.latency_sums[mode]] for mode, counts in self.latency_counts.items()},
            "ttft": {mode: [counts, self.ttft_sums[mode]] for mode, counts in self.ttft_counts.items()},
            "tokens": [[*key, n] for key, n in self.tokens.items()],
            "tool_calls": [[*key, n] for key, n in self.tool_calls.items()],
            "tool_seconds": dict(self.tool_seconds),
            "counters": {name: [[*key, n] for key, n in counts.items()] for name, (_, _, counts) in self._counters.items()},
            "inflight": self.inflight,
        }

    async def scrape(self, extra_gauges: dict[str, float] | None = None) -> str:
        """The exposition text: this process's counts plus its sibling workers' (when it has any)."""
        siblings = await self.siblings() if self.siblings is not None else []
        return self.render(extra_gauges, siblings)

    async def usage_totals(self) -> dict[str, Any]:
        """What a scrape counts, as JSON-able rows: requests by model, mode and status, tokens by model,
        latency percentiles by mode (estimated from the histogram), since this process started, over
        every worker. The console's usage page shows these when the usage ledger is off."""
        siblings = await self.siblings() if self.siblings is not None else []
        totals = _Totals(self)
        for snapshot in siblings:
            totals.add(snapshot)
        requests: dict[tuple[str, str, int], int] = defaultdict(int)
        for (_, mode, model, status), n in totals.requests.items():  # summed over paths
            requests[(model, mode, status)] += n
        tokens: dict[str, dict[str, int]] = defaultdict(lambda: {"prompt_tokens": 0, "completion_tokens": 0})
        for (model, kind), n in totals.tokens.items():
            tokens[model][f"{kind}_tokens"] += n
        latency = [
            {
                "mode": mode,
                "requests": sum(counts),
                "mean_ms": round(total / sum(counts) * 1000, 1) if sum(counts) else None,
                **{f"p{q}_ms": _ms(histogram_quantile(counts, q / 100)) for q in (50, 90, 99)},
            }
            for mode, (counts, total) in sorted(totals.latency.items())
        ]
        return {
            "since": self.started,
            "workers": 1 + sum(1 for snapshot in siblings if not snapshot.get("retired")),
            "requests": [{"model": m or None, "mode": mode, "status": status, "requests": n} for (m, mode, status), n in sorted(requests.items())],
            "tokens": [{"model": m or None, **counts} for m, counts in sorted(tokens.items())],
            "latency": latency,
        }

    def render(self, extra_gauges: dict[str, float] | None = None, siblings: list[dict[str, Any]] | None = None) -> str:
        totals = _Totals(self)
        for snapshot in siblings or ():
            totals.add(snapshot)
        lines = [
            "# HELP toolrelay_requests_total API requests (chat, responses, embeddings, completions, mcp) by path, mode, model and HTTP status.",
            "# TYPE toolrelay_requests_total counter",
        ]
        for (path, mode, model, status), n in sorted(totals.requests.items()):
            lines.append(f'toolrelay_requests_total{{path="{_escape(path)}",mode="{mode}",model="{_escape(model)}",status="{status}"}} {n}')
        lines += [
            "# HELP toolrelay_requests_in_flight HTTP requests being served (every path), over all workers.",
            "# TYPE toolrelay_requests_in_flight gauge",
            f"toolrelay_requests_in_flight {totals.inflight}",
            "# HELP toolrelay_request_duration_seconds Time from request to the last byte of the response.",
            "# TYPE toolrelay_request_duration_seconds histogram",
        ]
        _histogram(lines, "toolrelay_request_duration_seconds", totals.latency)
        lines += [
            "# HELP toolrelay_time_to_first_token_seconds Streamed responses: time from request to the first byte (sent once the first upstream event is in).",
            "# TYPE toolrelay_time_to_first_token_seconds histogram",
        ]
        _histogram(lines, "toolrelay_time_to_first_token_seconds", totals.ttft)
        lines += ["# HELP toolrelay_tokens_total Tokens by model and kind (prompt, completion).", "# TYPE toolrelay_tokens_total counter"]
        for (model, kind), n in sorted(totals.tokens.items()):
            lines.append(f'toolrelay_tokens_total{{model="{_escape(model)}",kind="{kind}"}} {n}')
        lines += ["# HELP toolrelay_tool_calls_total Built-in tool calls by tool and outcome.", "# TYPE toolrelay_tool_calls_total counter"]
        for (name, status), n in sorted(totals.tool_calls.items()):
            lines.append(f'toolrelay_tool_calls_total{{tool="{_escape(name)}",status="{status}"}} {n}')
        lines += ["# HELP toolrelay_tool_seconds_total Time spent in built-in tools.", "# TYPE toolrelay_tool_seconds_total counter"]
        for name, seconds in sorted(totals.tool_seconds.items()):
            lines.append(f'toolrelay_tool_seconds_total{{tool="{_escape(name)}"}} {seconds:.6f}')
        for name, (help_text, labels, _) in self._counters.items():
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} counter"]
            for key, n in sorted(totals.counters.get(name, {}).items()):
                pairs = ",".join(f'{label}="{_escape(value)}"' for label, value in zip(labels, key, strict=True))
                lines.append(f"{name}{{{pairs}}} {n}")
        lines += [
            "# HELP toolrelay_start_time_seconds When this process started (unix time).",
            "# TYPE toolrelay_start_time_seconds gauge",
            f"toolrelay_start_time_seconds {self.started:.0f}",
            "# HELP toolrelay_metrics_workers Worker processes whose counts this scrape holds (1 without --workers).",
            "# TYPE toolrelay_metrics_workers gauge",
            f"toolrelay_metrics_workers {1 + sum(1 for snapshot in siblings or () if not snapshot.get('retired'))}",
        ]
        for name, value in (extra_gauges or {}).items():
            lines += [f"# TYPE {name} gauge", f"{name} {value}"]
        for source in self._line_sources:
            lines += source()
        return "\n".join(lines) + "\n"


def histogram_quantile(counts: list[int], q: float, bounds: tuple[float, ...] = _BUCKETS) -> float | None:
    """The ``q`` quantile (0..1) of a histogram's per-bucket counts (``len(bounds) + 1``, the last
    unbounded), interpolated linearly inside its bucket as Prometheus' ``histogram_quantile`` does;
    in the unbounded bucket, the highest bound. ``None`` for an empty histogram."""
    total = sum(counts)
    if not total:
        return None
    rank = q * total
    seen = 0
    for i, count in enumerate(counts):
        if count and seen + count >= rank:
            if i == len(bounds):
                return bounds[-1]
            lower = bounds[i - 1] if i else 0.0
            return lower + (bounds[i] - lower) * max(rank - seen, 0.0) / count
        seen += count
    return bounds[-1]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def _observe(histogram: dict[str, list[int]], mode: str, seconds: float) -> None:
    counts = histogram.get(mode)
    if counts is None:
        counts = histogram[mode] = [0] * (len(_BUCKETS) + 1)
    for i, bound in enumerate(_BUCKETS):
        if seconds <= bound:
            counts[i] += 1
            return
    counts[-1] += 1


def _histogram(lines: list[str], name: str, series: dict[str, tuple[list[int], float]]) -> None:
    for mode, (counts, total) in sorted(series.items()):
        running = 0
        for bound, count in zip(_BUCKETS, counts, strict=False):
            running += count
            lines.append(f'{name}_bucket{{mode="{mode}",le="{bound}"}} {running}')
        running += counts[-1]
        lines.append(f'{name}_bucket{{mode="{mode}",le="+Inf"}} {running}')
        lines.append(f'{name}_sum{{mode="{mode}"}} {total:.6f}')
        lines.append(f'{name}_count{{mode="{mode}"}} {running}')


class _Totals:
    """One scrape's sums: this process's counts (copied) plus each sibling's snapshot."""

    def __init__(self, own: Metrics) -> None:
        self.requests: dict[tuple[Any, ...], int] = dict(own.requests)
        self.latency = {mode: (list(counts), own.latency_sums[mode]) for mode, counts in own.latency_counts.items()}
        self.ttft = {mode: (list(counts), own.ttft_sums[mode]) for mode, counts in own.ttft_counts.items()}
        self.tokens: dict[tuple[Any, ...], int] = dict(own.tokens)
        self.tool_calls: dict[tuple[Any, ...], int] = dict(own.tool_calls)
        self.tool_seconds: dict[str, float] = dict(own.tool_seconds)
        self.counters = {name: dict(counts) for name, (_, _, counts) in own._counters.items()}
        self.inflight = own.inflight

    def add(self, snapshot: dict[str, Any]) -> None:
        _add_rows(self.requests, snapshot.get("requests", ()))
        _add_rows(self.tokens, snapshot.get("tokens", ()))
        _add_rows(self.tool_calls, snapshot.get("tool_calls", ()))
        for name, seconds in snapshot.get("tool_seconds", {}).items():
            self.tool_seconds[name] = self.tool_seconds.get(name, 0.0) + seconds
        for name, rows in snapshot.get("counters", {}).items():
            _add_rows(self.counters.setdefault(name, {}), rows)
        for mine, theirs in ((self.latency, snapshot.get("latency", {})), (self.ttft, snapshot.get("ttft", {}))):
            for mode, (counts, total) in theirs.items():
                have = mine.get(mode)
                mine[mode] = (counts, total) if have is None else ([a + b for a, b in zip(have[0], counts, strict=True)], have[1] + total)
        self.inflight += int(snapshot.get("inflight", 0))


def _add_rows(into: dict[tuple[Any, ...], int], rows: Any) -> None:
    for row in rows:
        key = tuple(row[:-1])
        into[key] = into.get(key, 0) + row[-1]
