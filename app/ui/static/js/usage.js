// Usage (admin): requests, tokens and cost per day by key or model, latency percentiles, recent requests.

import { ApiError, adminApi, query } from "./api.js";
import { barChart, lastDays, lineChart } from "./charts.js";
import { errorBox, field, fmtTime, fmtUsd, h } from "./dom.js";

const COLUMNS = ["Time", "Status", "Key", "Model", "Mode", "Tokens", "Cost", "Latency", "Request id"];

export function usagePage(main) {
  const span = h("select", { id: "usage-span" }, [7, 14, 30].map((d) => h("option", { value: d }, `last ${d} days`)));
  const split = h("select", { id: "usage-split" }, h("option", { value: "model" }, "by model"), h("option", { value: "key" }, "by key"));
  const charts = h("div", { id: "usage-charts", class: "charts" });
  const filters = {
    key_id: h("input", { id: "req-key", placeholder: "key id" }),
    model: h("input", { id: "req-model", placeholder: "model" }),
    mode: h("select", { id: "req-mode" }, ["", "proxy", "agent", "memory", "responses", "mcp"].map((m) => h("option", { value: m }, m || "any mode"))),
    outcome: h("select", { id: "req-outcome" }, h("option", { value: "" }, "any status"), h("option", { value: "ok" }, "ok"), h("option", { value: "error" }, "errors")),
  };
  const tbody = h("tbody", { id: "req-rows" });
  const refresh = h("button", { id: "usage-refresh", type: "submit" }, "Refresh");
  main.append(
    h("h1", {}, "Usage"),
    h("div", { class: "row" }, field("Period", span), field("Split", split)),
    charts,
    h("h2", {}, "Recent requests"),
    h(
      "form",
      { class: "row filters", onsubmit: (event) => (event.preventDefault(), load()) },
      Object.values(filters),
      refresh,
    ),
    h("div", { class: "table-wrap" }, h("table", { id: "req-table" }, h("thead", {}, h("tr", {}, COLUMNS.map((c) => h("th", {}, c)))), tbody)),
  );
  span.addEventListener("change", load);
  split.addEventListener("change", load);
  // Whether the server keeps a ledger, asked once (the metrics route says so): without one the
  // ledger's routes answer 404, which the browser would log as errors on every refresh.
  let ledgerOn = null;
  // Each load is numbered: answers to an older one (a refresh clicked twice, a period changed while
  // loading) are dropped rather than drawn over newer ones.
  let loads = 0;
  load();

  async function load() {
    const mine = ++loads;
    if (ledgerOn === null) {
      try {
        const totals = await adminApi("/admin/usage/metrics");
        ledgerOn = totals.ledger !== false;
        if (!ledgerOn) return showMetrics(totals);
      } catch {
        ledgerOn = true; // an older server without the route: ask the ledger as before
      }
    } else if (!ledgerOn) {
      return loadMetrics();
    }
    const days = lastDays(Number(span.value));
    const since = days[0];
    const by = split.value;
    try {
      const [usage, latency, recent] = await Promise.all([
        adminApi("/admin/usage" + query({ group_by: `day,${by}`, since })),
        adminApi("/admin/usage/latency" + query({ group_by: "day", since })),
        adminApi("/admin/requests" + query({ limit: 100, ...Object.fromEntries(Object.entries(filters).map(([k, el]) => [k, el.value.trim()])) })),
      ]);
      if (mine !== loads) return;
      charts.replaceChildren(...drawCharts(days, usage.data, latency.data, by));
      tbody.replaceChildren(...recent.data.map(requestRow));
      if (!recent.data.length) tbody.append(h("tr", {}, h("td", { colspan: COLUMNS.length, class: "muted" }, "No requests match.")));
    } catch (err) {
      if (err instanceof ApiError && err.body && err.body.error && err.body.error.code === "ledger_disabled") await loadMetrics();
      else charts.replaceChildren(errorBox(err));
    }
  }

  // Without the ledger (auth.ledger = false) there is no per-day, per-key or cost history and no request
  // rows: the page shows the server's own counters instead (what /metrics counts, since it started).
  async function loadMetrics() {
    try {
      showMetrics(await adminApi("/admin/usage/metrics"));
    } catch (err) {
      charts.replaceChildren(errorBox(err));
    }
  }

  function showMetrics(totals) {
    charts.replaceChildren(...drawMetrics(totals));
    const note = "The usage ledger is off (auth.ledger = false): no request history to list.";
    tbody.replaceChildren(h("tr", {}, h("td", { colspan: COLUMNS.length, class: "muted" }, note)));
  }
}

const STATUS_CLASSES = ["2xx", "3xx", "4xx", "5xx"];

function drawMetrics(totals) {
  const models = [...new Set(totals.requests.map((r) => r.model ?? "(none)"))];
  const series = STATUS_CLASSES.map((name) => ({
    name,
    values: models.map((model) =>
      totals.requests.filter((r) => (r.model ?? "(none)") === model && `${String(r.status)[0]}xx` === name).reduce((sum, r) => sum + r.requests, 0),
    ),
  })).filter((serie) => serie.values.some(Boolean));
  const note = h(
    "p",
    { id: "usage-metrics-note", class: "muted" },
    `The usage ledger is off (auth.ledger = false), so there are no per-day, per-key or cost figures. `,
    `These are this server's own counters (as in /metrics) since it started at ${fmtTime(Date.parse(totals.since) / 1000)} UTC, over ${totals.workers} worker(s).`,
  );
  const table = (id, head, rows) =>
    h("div", { class: "table-wrap" }, h("table", { id }, h("thead", {}, h("tr", {}, head.map((c) => h("th", {}, c)))), h("tbody", {}, rows)));
  const ms = (v) => (v === null || v === undefined ? "" : `${Math.round(v)} ms`);
  return [
    note,
    barChart({ id: "chart-requests", title: "Requests by model and status", days: models, series, format: (v) => String(v), label: (m) => (m.length > 18 ? m.slice(0, 17) + "…" : m) }),
    h(
      "figure",
      { class: "chart-box", id: "metrics-tables" },
      h("figcaption", {}, "Requests, tokens and latency"),
      table(
        "metrics-requests",
        ["Model", "Mode", "Status", "Requests"],
        totals.requests.map((r) => h("tr", {}, h("td", {}, r.model || ""), h("td", {}, r.mode), h("td", {}, String(r.status)), h("td", {}, String(r.requests)))),
      ),
      table(
        "metrics-tokens",
        ["Model", "Prompt tokens", "Completion tokens"],
        totals.tokens.map((r) => h("tr", {}, h("td", {}, r.model || ""), h("td", {}, String(r.prompt_tokens)), h("td", {}, String(r.completion_tokens)))),
      ),
      table(
        "metrics-latency",
        ["Mode", "Requests", "p50", "p90", "p99", "mean"],
        totals.latency.map((r) =>
          h("tr", {}, h("td", {}, r.mode), h("td", {}, String(r.requests)), h("td", {}, ms(r.p50_ms)), h("td", {}, ms(r.p90_ms)), h("td", {}, ms(r.p99_ms)), h("td", {}, ms(r.mean_ms))),
        ),
      ),
      h("small", { class: "muted" }, "Latency percentiles are estimated from the histogram's buckets."),
    ),
  ];
}

function drawCharts(days, rows, latency, by) {
  const names = new Map();
  for (const row of rows) {
    const id = row[by] ?? "(none)";
    if (!names.has(id)) names.set(id, by === "key" && row.key_name ? `${row.key_name} (${id})` : String(id));
  }
  const series = (metric) =>
    [...names.entries()].map(([id, name]) => ({
      name,
      values: days.map((day) => rows.filter((r) => r.day === day && (r[by] ?? "(none)") === id).reduce((sum, r) => sum + (r[metric] || 0), 0)),
    }));
  const count = (v) => (v >= 1000 ? (v / 1000).toFixed(1) + "k" : String(Math.round(v * 100) / 100));
  const ms = (v) => `${Math.round(v)} ms`;
  const perDay = new Map(latency.map((r) => [r.day, r]));
  const pick = (key) => days.map((day) => (perDay.has(day) ? perDay.get(day)[key] : null));
  return [
    barChart({ id: "chart-requests", title: "Requests per day", days, series: series("requests"), format: count }),
    barChart({ id: "chart-tokens", title: "Tokens per day", days, series: series("total_tokens"), format: count }),
    barChart({ id: "chart-cost", title: "Cost per day (USD)", days, series: series("cost_usd"), format: (v) => fmtUsd(v) || "$0" }),
    lineChart({
      id: "chart-latency",
      title: "Latency percentiles per day",
      days,
      series: [
        { name: "p50", values: pick("p50_ms") },
        { name: "p90", values: pick("p90_ms") },
        { name: "p99", values: pick("p99_ms") },
      ],
      format: ms,
    }),
  ];
}

function requestRow(row) {
  const failed = row.status >= 400;
  return h(
    "tr",
    { class: failed ? "failed" : null },
    h("td", {}, fmtTime(row.ts)),
    h("td", {}, String(row.status ?? ""), row.error_code ? h("small", { class: "muted" }, " " + row.error_code) : null),
    h("td", {}, row.key_name ? `${row.key_name} (${row.key_id})` : row.key_id || ""),
    h("td", {}, row.model || ""),
    h("td", {}, row.mode || ""),
    h("td", {}, String((row.prompt_tokens || 0) + (row.completion_tokens || 0)) + (row.estimated ? "*" : "")),
    h("td", {}, fmtUsd(row.cost_usd)),
    h("td", {}, row.latency_ms === null || row.latency_ms === undefined ? "" : `${Math.round(row.latency_ms)} ms`),
    h("td", { class: "mono" }, row.request_id || ""),
  );
}
