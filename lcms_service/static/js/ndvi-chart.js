// The NDVI time series of one pixel as a small SVG line plot: one line per season, over the day of the year
// so seasons lie on top of each other, with the values in a table for screen readers.

import { h } from "./dom.js";

const SVG = "http://www.w3.org/2000/svg";
const PALETTE = ["#1b7837", "#c51b7d", "#2166ac", "#e08214", "#542788", "#4d4d4d"];
const W = 360;
const H = 170;
const M = { left: 34, right: 10, top: 10, bottom: 26 };
const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  for (const c of children) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

function dayOfYear(text) {
  const d = new Date(`${text.slice(0, 10)}T00:00:00Z`);
  return (d - Date.UTC(d.getUTCFullYear(), 0, 1)) / 86_400_000;
}

/**
 * Draw `series` ({season: [{date, ndvi}]}) into `figure`; returns false (and hides the figure) when there is
 * no value to plot.
 */
export function renderNdviChart(figure, series) {
  const seasons = Object.keys(series || {}).sort();
  const points = seasons.flatMap((s) =>
    (series[s] || []).filter((p) => p && p.date && Number.isFinite(p.ndvi)).map((p) => ({ ...p, season: s })),
  );
  figure.replaceChildren();
  if (!points.length) {
    figure.hidden = true;
    return false;
  }
  figure.hidden = false;
  const days = points.map((p) => dayOfYear(p.date));
  let x0 = Math.min(...days);
  let x1 = Math.max(...days);
  if (x1 - x0 < 30) {
    x0 -= 15;
    x1 += 15;
  }
  const values = points.map((p) => p.ndvi);
  const y0 = Math.min(-0.1, Math.floor(Math.min(...values) * 10) / 10);
  const y1 = Math.max(1, Math.ceil(Math.max(...values) * 10) / 10);
  const sx = (d) => M.left + ((d - x0) / (x1 - x0)) * (W - M.left - M.right);
  const sy = (v) => H - M.bottom - ((v - y0) / (y1 - y0)) * (H - M.top - M.bottom);

  const plot = svg("svg", {
    viewBox: `0 0 ${W} ${H}`,
    class: "ndvi-svg",
    role: "img",
    "aria-labelledby": "ndvi-caption",
  });
  const axes = svg("g", { class: "axes" });
  for (let v = Math.ceil(y0 * 5) / 5; v <= y1 + 1e-9; v += 0.2) {
    const y = sy(v);
    axes.append(svg("line", { x1: M.left, x2: W - M.right, y1: y, y2: y, class: "grid" }));
    axes.append(svg("text", { x: M.left - 4, y: y + 3, "text-anchor": "end" }, v.toFixed(1)));
  }
  for (let m = 0; m < 12; m += 1) {
    const d = (Date.UTC(2001, m, 1) - Date.UTC(2001, 0, 1)) / 86_400_000;
    if (d < x0 || d > x1) continue;
    const x = sx(d);
    axes.append(svg("line", { x1: x, x2: x, y1: H - M.bottom, y2: H - M.bottom + 4, class: "tick" }));
    axes.append(svg("text", { x, y: H - M.bottom + 15, "text-anchor": "middle" }, MONTHS[m]));
  }
  axes.append(svg("line", { x1: M.left, x2: W - M.right, y1: H - M.bottom, y2: H - M.bottom, class: "axis" }));
  axes.append(svg("line", { x1: M.left, x2: M.left, y1: M.top, y2: H - M.bottom, class: "axis" }));
  plot.append(axes);

  const legend = h("ul", { class: "ndvi-legend" });
  seasons.forEach((season, i) => {
    const colour = PALETTE[i % PALETTE.length];
    const own = points.filter((p) => p.season === season).sort((a, b) => a.date.localeCompare(b.date));
    if (!own.length) return;
    const path = own.map((p) => `${sx(dayOfYear(p.date)).toFixed(1)},${sy(p.ndvi).toFixed(1)}`).join(" ");
    const line = svg("g", { class: "series", "data-season": season });
    line.append(svg("polyline", { points: path, fill: "none", stroke: colour, "stroke-width": 2 }));
    for (const p of own) {
      const dot = svg("circle", { cx: sx(dayOfYear(p.date)), cy: sy(p.ndvi), r: 2.5, fill: colour });
      dot.append(svg("title", {}, `${p.date}: NDVI ${p.ndvi.toFixed(3)}`));
      line.append(dot);
    }
    plot.append(line);
    legend.append(h("li", {}, h("span", { class: "swatch", style: { background: colour } }), `NDVI ${season}`));
  });

  const rows = points
    .slice()
    .sort((a, b) => a.date.localeCompare(b.date))
    .map((p) => h("tr", {}, h("td", {}, p.season), h("td", {}, p.date), h("td", {}, p.ndvi.toFixed(3))));
  const table = h(
    "details",
    { class: "ndvi-values" },
    h("summary", {}, "Values"),
    h(
      "table",
      {},
      h("thead", {}, h("tr", {}, h("th", {}, "Season"), h("th", {}, "Date"), h("th", {}, "NDVI"))),
      h("tbody", {}, rows),
    ),
  );
  figure.append(plot, h("figcaption", { id: "ndvi-caption" }, "NDVI of the pixel over the season"), legend, table);
  return true;
}
