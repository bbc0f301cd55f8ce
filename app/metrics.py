"""Prometheus metrics: requests, latency, tokens, tool calls.

Plain counters in this process, rendered in the Prometheus text format at
``GET /metrics``; recording one request is a handful of dict updates. With
several workers each reports its own (Prometheus sums them per instance
label). Labels are bounded: the path label is the matched route's template
(one "other" for paths no route matched: 20,000 random paths once grew
/metrics to 42 MB), model ids come from the server's own routing table (and
at most ``_MAX_MODELS`` of them, since a prefix route serves any suffix),
status codes and modes are few.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
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
        # Labelled series kept by their owners (the failover router's attempts and breaker states).
        self._line_sources: list[Callable[[], list[str]]] = []

    def add_lines(self, source: Callable[[], list[str]]) -> None:
        """Render ``source()``'s exposition lines (with their HELP/TYPE) in every scrape."""
        self._line_sources.append(source)

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
        counts = self.latency_counts.get(mode)
        if counts is None:
            counts = self.latency_counts[mode] = [0] * (len(_BUCKETS) + 1)
        for i, bound in enumerate(_BUCKETS):
            if latency <= bound:
                counts[i] += 1
                break
        else:
            counts[-1] += 1
        self.latency_sums[mode] += latency
        if info.prompt_tokens:
            self.tokens[(model, "prompt")] += info.prompt_tokens
        if info.completion_tokens:
            self.tokens[(model, "completion")] += info.completion_tokens

    def record_tool(self, name: str, status: str, seconds: float) -> None:
        self.tool_calls[(name, status)] += 1
        self.tool_seconds[name] += seconds

    def render(self, extra_gauges: dict[str, float] | None = None) -> str:
        lines = [
            "# HELP toolrelay_requests_total API requests (chat, responses, embeddings, completions, mcp) by path, mode, model and HTTP status.",
            "# TYPE toolrelay_requests_total counter",
        ]
        for (path, mode, model, status), n in sorted(self.requests.items()):
            lines.append(f'toolrelay_requests_total{{path="{_escape(path)}",mode="{mode}",model="{_escape(model)}",status="{status}"}} {n}')
        lines += [
            "# HELP toolrelay_request_duration_seconds Time from request to the last byte of the response.",
            "# TYPE toolrelay_request_duration_seconds histogram",
        ]
        for mode, counts in sorted(self.latency_counts.items()):
            running = 0
            for bound, count in zip(_BUCKETS, counts, strict=False):
                running += count
                lines.append(f'toolrelay_request_duration_seconds_bucket{{mode="{mode}",le="{bound}"}} {running}')
            running += counts[-1]
            lines.append(f'toolrelay_request_duration_seconds_bucket{{mode="{mode}",le="+Inf"}} {running}')
            lines.append(f'toolrelay_request_duration_seconds_sum{{mode="{mode}"}} {self.latency_sums[mode]:.6f}')
            lines.append(f'toolrelay_request_duration_seconds_count{{mode="{mode}"}} {running}')
        lines += ["# HELP toolrelay_tokens_total Tokens by model and kind (prompt, completion).", "# TYPE toolrelay_tokens_total counter"]
        for (model, kind), n in sorted(self.tokens.items()):
            lines.append(f'toolrelay_tokens_total{{model="{_escape(model)}",kind="{kind}"}} {n}')
        lines += ["# HELP toolrelay_tool_calls_total Built-in tool calls by tool and outcome.", "# TYPE toolrelay_tool_calls_total counter"]
        for (name, status), n in sorted(self.tool_calls.items()):
            lines.append(f'toolrelay_tool_calls_total{{tool="{_escape(name)}",status="{status}"}} {n}')
        lines += ["# HELP toolrelay_tool_seconds_total Time spent in built-in tools.", "# TYPE toolrelay_tool_seconds_total counter"]
        for name, seconds in sorted(self.tool_seconds.items()):
            lines.append(f'toolrelay_tool_seconds_total{{tool="{_escape(name)}"}} {seconds:.6f}')
        lines += [
            "# HELP toolrelay_start_time_seconds When this process started (unix time).",
            "# TYPE toolrelay_start_time_seconds gauge",
            f"toolrelay_start_time_seconds {self.started:.0f}",
        ]
        for name, value in (extra_gauges or {}).items():
            lines += [f"# TYPE {name} gauge", f"{name} {value}"]
        for source in self._line_sources:
            lines += source()
        return "\n".join(lines) + "\n"
