// A small SVG line chart, written here rather than vendored: the console draws a few series of
// tens of points (weights per step, error rate and p99 per analysis), which needs no library.
//
// lineChart({title, series: [{name, points: [[x, y], ...], dash?}], thresholds: [{y, label}],
//            yFormat, xFormat, step}) -> <figure> with an SVG, a legend in words and a data table
// for screen readers (a chart is never the only way to read a number).

import { h } from "./lib.js";

const NS = "http://www.w3.org/2000/svg";
const WIDTH = 640;
const HEIGHT = 200;
const PAD = { left: 56, right: 12, top: 12, bottom: 28 };
const PALETTE = ["#1f6feb", "#d4761e", "#2da44e", "#8250df", "#cf222e", "#57606a"];
const DASHES = ["", "6 3", "2 3", "8 3 2 3", "1 4", "10 4"];

function svg(tag, attrs = {}, ...children) {
  const element = document.createElementNS(NS, tag);
  for (const [key, value] of Object.entries(attrs)) element.setAttribute(key, String(value));
  for (const child of children) if (child) element.append(child);
  return element;
}

function niceMax(value) {
  if (value <= 0) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) if (step * power >= value) return step * power;
  return 10 * power;
}

export function lineChart({ title, series, thresholds = [], yFormat = String, xFormat = String, step = false, yMax }) {
  const xs = series.flatMap((s) => s.points.map((p) => p[0]));
  const ys = series.flatMap((s) => s.points.map((p) => p[1])).concat(thresholds.map((t) => t.y));
  const figure = h("figure", { class: "chart" }, h("figcaption", {}, title));
  if (!xs.length) {
    figure.append(h("p", { class: "muted" }, "No data yet."));
    return figure;
  }
  const x0 = Math.min(...xs);
  const x1 = Math.max(...xs) === x0 ? x0 + 1 : Math.max(...xs);
  const top = yMax ?? niceMax(Math.max(...ys, 0) * 1.1);
  const sx = (x) => PAD.left + ((x - x0) / (x1 - x0)) * (WIDTH - PAD.left - PAD.right);
  const sy = (y) => HEIGHT - PAD.bottom - (Math.min(y, top) / top) * (HEIGHT - PAD.top - PAD.bottom);
  const plot = svg("svg", { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: "img", "aria-label": title, class: "plot" });
  for (const fraction of [0, 0.5, 1]) {
    const y = sy(top * fraction);
    plot.append(svg("line", { x1: PAD.left, x2: WIDTH - PAD.right, y1: y, y2: y, class: "grid" }));
    const label = svg("text", { x: PAD.left - 6, y: y + 4, "text-anchor": "end", class: "axis" });
    label.textContent = yFormat(top * fraction);
    plot.append(label);
  }
  for (const [x, anchor] of [[x0, "start"], [x1, "end"]]) {
    const label = svg("text", { x: sx(x), y: HEIGHT - 8, "text-anchor": anchor, class: "axis" });
    label.textContent = xFormat(x);
    plot.append(label);
  }
  for (const t of thresholds) {
    const y = sy(t.y);
    plot.append(svg("line", { x1: PAD.left, x2: WIDTH - PAD.right, y1: y, y2: y, class: "threshold" }));
    const label = svg("text", { x: WIDTH - PAD.right, y: y - 4, "text-anchor": "end", class: "axis threshold-label" });
    label.textContent = t.label;
    plot.append(label);
  }
  series.forEach((s, i) => {
    if (!s.points.length) return;
    let d = "";
    s.points.forEach(([x, y], j) => {
      if (j === 0) d += `M${sx(x)},${sy(y)}`;
      else if (step) d += `H${sx(x)}V${sy(y)}`;
      else d += `L${sx(x)},${sy(y)}`;
    });
    if (step) d += `H${sx(x1)}`;
    const dash = s.dash ?? DASHES[i % DASHES.length];
    plot.append(svg("path", { d, fill: "none", stroke: PALETTE[i % PALETTE.length], "stroke-width": 2, "stroke-dasharray": dash }));
    for (const [x, y] of s.points) plot.append(svg("circle", { cx: sx(x), cy: sy(y), r: 2.5, fill: PALETTE[i % PALETTE.length] }));
  });
  figure.append(plot);
  figure.append(
    h(
      "ul",
      { class: "legend" },
      series.map((s, i) => {
        const last = s.points.length ? s.points[s.points.length - 1][1] : null;
        const swatch = svg("svg", { width: 24, height: 8, "aria-hidden": "true" }, svg("line", { x1: 0, x2: 24, y1: 4, y2: 4, stroke: PALETTE[i % PALETTE.length], "stroke-width": 2, "stroke-dasharray": s.dash ?? DASHES[i % DASHES.length] }));
        return h("li", {}, swatch, ` ${s.name}: ${last === null ? "—" : yFormat(last)}`);
      }),
      thresholds.map((t) => h("li", {}, `threshold ${t.label}`)),
    ),
  );
  const details = h("details", {}, h("summary", {}, "Data"));
  details.append(
    h(
      "table",
      {},
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "series"), h("th", { scope: "col" }, "x"), h("th", { scope: "col" }, "y"))),
      h("tbody", {}, series.flatMap((s) => s.points.map(([x, y]) => h("tr", {}, h("td", {}, s.name), h("td", {}, xFormat(x)), h("td", {}, yFormat(y)))))),
    ),
  );
  figure.append(details);
  return figure;
}
