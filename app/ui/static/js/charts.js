// Charts drawn as SVG nodes (no library): stacked bars per day, lines for latency percentiles.

import { h, s } from "./dom.js";

const COLORS = ["#2b5fd9", "#e07b00", "#1a9c5b", "#c23b7a", "#7a52c7", "#0097a7", "#8d6e63", "#607d8b"];
const W = 640;
const H = 220;
const PAD = { left: 56, right: 8, top: 12, bottom: 28 };

function axis(max, format) {
  const nodes = [];
  for (const fraction of [0, 0.5, 1]) {
    const y = PAD.top + (H - PAD.top - PAD.bottom) * (1 - fraction);
    nodes.push(s("line", { x1: PAD.left, x2: W - PAD.right, y1: y, y2: y, class: "grid" }));
    nodes.push(s("text", { x: PAD.left - 6, y: y + 4, "text-anchor": "end", class: "tick" }, format(max * fraction)));
  }
  return nodes;
}

const shortDay = (day) => day.slice(5);

function dayLabels(days, x, label = shortDay) {
  const every = Math.max(1, Math.ceil(days.length / 8));
  return days.map((day, i) => (i % every ? null : s("text", { x: x(i), y: H - 8, "text-anchor": "middle", class: "tick" }, label(day))));
}

function legend(names) {
  return h(
    "ul",
    { class: "legend" },
    names.map((name, i) => h("li", {}, s("svg", { viewBox: "0 0 10 10", width: 10, height: 10 }, s("rect", { width: 10, height: 10, fill: COLORS[i % COLORS.length] })), " ", name)),
  );
}

/** Stacked bars: ``series`` is [{name, values: number[] (one per day)}]; ``label`` names a bar (by default MM-DD of its day). */
export function barChart({ id, title, days, series, format, label = shortDay }) {
  const totals = days.map((_, i) => series.reduce((sum, serie) => sum + (serie.values[i] || 0), 0));
  const max = Math.max(...totals, 0) || 1;
  const plotW = W - PAD.left - PAD.right;
  const plotH = H - PAD.top - PAD.bottom;
  const step = plotW / Math.max(days.length, 1);
  const x = (i) => PAD.left + step * (i + 0.5);
  const bars = [];
  days.forEach((day, i) => {
    let base = 0;
    series.forEach((serie, k) => {
      const value = serie.values[i] || 0;
      if (!value) return;
      const height = (value / max) * plotH;
      const y = PAD.top + plotH - base - height;
      bars.push(
        s(
          "rect",
          { x: x(i) - step * 0.35, y, width: step * 0.7, height: Math.max(height, 0.5), fill: COLORS[k % COLORS.length], class: "bar" },
          s("title", {}, `${day} · ${serie.name}: ${format(value)}`),
        ),
      );
      base += height;
    });
  });
  const chart = s("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-label": title }, axis(max, format), bars, dayLabels(days, x, label));
  return h("figure", { class: "chart-box", id }, h("figcaption", {}, title), chart, legend(series.map((serie) => serie.name)));
}

/** Lines: ``series`` is [{name, values: (number|null)[]}]. */
export function lineChart({ id, title, days, series, format }) {
  const all = series.flatMap((serie) => serie.values.filter((v) => v !== null && v !== undefined));
  const max = Math.max(...all, 0) || 1;
  const plotW = W - PAD.left - PAD.right;
  const plotH = H - PAD.top - PAD.bottom;
  const step = plotW / Math.max(days.length, 1);
  const x = (i) => PAD.left + step * (i + 0.5);
  const y = (v) => PAD.top + plotH - (v / max) * plotH;
  const lines = series.map((serie, k) => {
    const color = COLORS[k % COLORS.length];
    const points = serie.values.map((v, i) => (v === null || v === undefined ? null : [x(i), y(v), v, days[i]])).filter(Boolean);
    const path = points.map(([px, py], i) => `${i ? "L" : "M"}${px.toFixed(1)},${py.toFixed(1)}`).join(" ");
    return s(
      "g",
      { class: "serie" },
      path ? s("path", { d: path, fill: "none", stroke: color, "stroke-width": 2 }) : null,
      points.map(([px, py, v, day]) => s("circle", { cx: px, cy: py, r: 3, fill: color }, s("title", {}, `${day} · ${serie.name}: ${format(v)}`))),
    );
  });
  const chart = s("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-label": title }, axis(max, format), lines, dayLabels(days, x));
  return h("figure", { class: "chart-box", id }, h("figcaption", {}, title), chart, legend(series.map((serie) => serie.name)));
}

/** The UTC days from ``count - 1`` days ago to today, as YYYY-MM-DD. */
export function lastDays(count) {
  const today = Date.UTC(new Date().getUTCFullYear(), new Date().getUTCMonth(), new Date().getUTCDate());
  return Array.from({ length: count }, (_, i) => new Date(today - (count - 1 - i) * 86400000).toISOString().slice(0, 10));
}
