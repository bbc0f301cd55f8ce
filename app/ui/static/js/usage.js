// Usage (admin): requests, tokens and cost per day by key or model, latency percentiles, recent requests.

import { adminApi, query } from "./api.js";
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
  load();

  async function load() {
    const days = lastDays(Number(span.value));
    const since = days[0];
    const by = split.value;
    try {
      const [usage, latency, recent] = await Promise.all([
        adminApi("/admin/usage" + query({ group_by: `day,${by}`, since })),
        adminApi("/admin/usage/latency" + query({ group_by: "day", since })),
        adminApi("/admin/requests" + query({ limit: 100, ...Object.fromEntries(Object.entries(filters).map(([k, el]) => [k, el.value.trim()])) })),
      ]);
      charts.replaceChildren(...drawCharts(days, usage.data, latency.data, by));
      tbody.replaceChildren(...recent.data.map(requestRow));
      if (!recent.data.length) tbody.append(h("tr", {}, h("td", { colspan: COLUMNS.length, class: "muted" }, "No requests match.")));
    } catch (err) {
      charts.replaceChildren(errorBox(err));
    }
  }
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
