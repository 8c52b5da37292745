// The console's own static files, kept as strings so that dist/ carries them (tsc copies only
// TypeScript): a little CSS on top of Pico, and the progressive enhancement. Pages work without
// this script (every figure is also in a table, every action is a form); with it, the charts are
// drawn by Chart.js from the JSON each page embeds, in the colours of the current light/dark theme.

export const CONSOLE_CSS = `
:root { --pico-font-size: 100%; }
@media (min-width: 1280px) { :root { --pico-font-size: 100%; } }
body > header, body > main, body > footer { max-width: 1440px; margin: 0 auto; padding-left: 1.25rem; padding-right: 1.25rem; }
body > header nav { flex-wrap: wrap; }
body > header nav ul:first-child li strong { font-size: 1.05rem; }
body > header nav a[aria-current="page"] { font-weight: 700; text-decoration: underline; }
main h1 { font-size: 1.6rem; margin-bottom: 0.5rem; }
main h2 { font-size: 1.25rem; margin-top: 1.75rem; margin-bottom: 0.5rem; }
main h3 { font-size: 1.05rem; margin-top: 1rem; margin-bottom: 0.4rem; }
.figures { display: grid; grid-template-columns: repeat(auto-fill, minmax(13rem, 1fr)); gap: 0.75rem; margin-bottom: 1rem; }
.figures article { margin: 0; padding: 0.75rem 1rem; }
.figures article a { text-decoration: none; color: inherit; display: block; }
.figures article a:hover .figure-value { text-decoration: underline; }
.figure-label { font-size: 0.8rem; color: var(--pico-muted-color); text-transform: uppercase; letter-spacing: 0.03em; }
.figure-value { font-size: 1.5rem; font-weight: 650; line-height: 1.25; display: block; font-variant-numeric: tabular-nums; }
.figure-time { font-size: 1.1rem; }
.figure-note { font-size: 0.8rem; color: var(--pico-muted-color); display: block; }
.figure-warn .figure-value { color: var(--pico-del-color); }
.muted { color: var(--pico-muted-color); }
.small { font-size: 0.85rem; }
.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table { font-size: 0.9rem; }
table td, table th { padding: 0.35rem 0.6rem; vertical-align: top; }
.table-wrap { overflow-x: auto; }
code, .mono { font-size: 0.85em; word-break: break-all; }
pre { font-size: 0.8rem; max-height: 32rem; overflow: auto; padding: 0.75rem; }
.chart { position: relative; height: 16rem; margin-bottom: 0.5rem; }
.chart canvas { width: 100% !important; }
.grid-2 { display: grid; grid-template-columns: repeat(auto-fit, minmax(26rem, 1fr)); gap: 1.25rem; }
.flash { padding: 0.75rem 1rem; border-left: 0.3rem solid var(--pico-primary); background: var(--pico-card-background-color); margin-bottom: 1rem; }
.flash-error { border-left-color: var(--pico-del-color); }
.badge { display: inline-block; font-size: 0.75rem; padding: 0.05rem 0.45rem; border-radius: 0.6rem; border: 1px solid var(--pico-muted-border-color); color: var(--pico-muted-color); white-space: nowrap; }
.badge-warn { border-color: var(--pico-del-color); color: var(--pico-del-color); }
.badge-ok { border-color: var(--pico-ins-color); color: var(--pico-ins-color); }
form.inline { display: inline-flex; gap: 0.4rem; align-items: center; margin: 0; flex-wrap: wrap; }
form.inline input, form.inline select, form.inline button { margin: 0; padding: 0.3rem 0.5rem; height: auto; font-size: 0.85rem; width: auto; }
main form button, main form [type="submit"] { width: auto; }
.filters { display: flex; gap: 0.75rem; flex-wrap: wrap; align-items: flex-end; margin-bottom: 1rem; }
.filters label { margin: 0; font-size: 0.85rem; display: flex; flex-direction: column; gap: 0.2rem; }
.filters input, .filters select { margin: 0; width: 18rem; padding: 0.4rem 0.6rem; height: auto; }
.filters button { margin: 0; padding: 0.45rem 1rem; }
details.raw summary { font-size: 0.85rem; }
.actions { display: flex; gap: 0.75rem; flex-wrap: wrap; align-items: center; }
.actions form { margin: 0; }
a code, a .mono { color: var(--pico-primary); }
form.inline select { padding-right: 2rem; }
form.inline .csv-link { font-size: 0.9rem; margin-left: 0.5rem; }
.actions button { margin: 0; }
footer { font-size: 0.8rem; color: var(--pico-muted-color); padding-top: 1rem; padding-bottom: 2rem; }
`;

export const CONSOLE_JS = `
(function () {
  "use strict";
  function css(name, fallback) {
    var v = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
    return v || fallback;
  }
  function bytes(n) {
    var a = Math.abs(n);
    var units = ["B", "kB", "MB", "GB", "TB", "PB"];
    var i = 0;
    while (a >= 1000 && i < units.length - 1) { a /= 1000; i++; }
    return (n < 0 ? "-" : "") + (i === 0 ? String(a) : a.toFixed(a < 10 ? 2 : a < 100 ? 1 : 0)) + " " + units[i];
  }
  function ms(n) {
    if (n === null || n === undefined) return "";
    if (n < 1000) return Math.round(n) + " ms";
    if (n < 120000) return (n / 1000).toFixed(1) + " s";
    if (n < 7200000) return (n / 60000).toFixed(1) + " min";
    return (n / 3600000).toFixed(1) + " h";
  }
  function utc(t) {
    return new Date(t).toISOString().slice(5, 16).replace("T", " ");
  }
  var formats = { bytes: bytes, ms: ms, count: function (n) { return String(n); } };
  var charts = [];
  function palette() {
    return [css("--pico-primary", "#0172ad"), "#d9480f", "#2f9e44", "#7048e8", "#c2255c", "#1098ad", "#e67700", "#5c7cfa"];
  }
  function draw() {
    if (typeof Chart === "undefined") return;
    charts.forEach(function (c) { c.destroy(); });
    charts = [];
    var text = css("--pico-color", "#373c44");
    var muted = css("--pico-muted-color", "#646b79");
    var grid = css("--pico-muted-border-color", "#e7eaf0");
    Chart.defaults.color = muted;
    Chart.defaults.borderColor = grid;
    Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
    document.querySelectorAll("canvas[data-chart]").forEach(function (canvas) {
      var source = document.getElementById(canvas.getAttribute("data-chart"));
      if (!source) return;
      var spec = JSON.parse(source.textContent);
      var colors = palette();
      var fmt = formats[spec.unit] || formats.count;
      var fmt2 = formats[spec.unit2] || fmt;
      var linear = spec.x === "time";
      var datasets = spec.datasets.map(function (d, i) {
        var color = d.color === "muted" ? muted : colors[i % colors.length];
        return Object.assign({
          borderColor: color,
          backgroundColor: spec.type === "bar" ? color : color,
          pointRadius: spec.type === "line" && (linear || (spec.labels || []).length <= 48) ? 2 : 0,
          borderWidth: spec.type === "line" ? 2 : 0,
          spanGaps: false
        }, d);
      });
      var scales = {
        x: linear
          ? { type: "linear", ticks: { callback: function (v) { return utc(v); }, maxTicksLimit: 8 }, grid: { color: grid } }
          : { ticks: { maxTicksLimit: 12, autoSkip: true }, grid: { display: false }, stacked: !!spec.stacked },
        y: { beginAtZero: true, ticks: { callback: function (v) { return fmt(v); } }, grid: { color: grid }, stacked: !!spec.stacked }
      };
      if (spec.unit2) scales.y2 = { position: "right", beginAtZero: true, ticks: { callback: function (v) { return fmt2(v); } }, grid: { display: false } };
      charts.push(new Chart(canvas, {
        type: spec.type,
        data: { labels: spec.labels, datasets: datasets },
        options: {
          responsive: true,
          maintainAspectRatio: false,
          animation: false,
          parsing: linear ? false : true,
          interaction: { mode: linear ? "nearest" : "index", intersect: false },
          plugins: {
            legend: { display: datasets.length > 1, labels: { color: text, boxWidth: 12 } },
            tooltip: {
              callbacks: {
                title: function (items) { return linear && items[0] ? utc(items[0].parsed.x) + " UTC" : (items[0] ? items[0].label : ""); },
                label: function (item) {
                  var f = item.dataset.yAxisID === "y2" ? fmt2 : fmt;
                  return (item.dataset.label ? item.dataset.label + ": " : "") + f(item.parsed.y);
                }
              }
            }
          },
          scales: scales
        }
      }));
    });
  }
  document.addEventListener("DOMContentLoaded", function () {
    draw();
    if (window.matchMedia) {
      var mq = window.matchMedia("(prefers-color-scheme: dark)");
      if (mq.addEventListener) mq.addEventListener("change", draw);
    }
    document.querySelectorAll("input[data-select-all]").forEach(function (box) {
      box.addEventListener("change", function () {
        document.querySelectorAll("input[name='" + box.getAttribute("data-select-all") + "']").forEach(function (b) { b.checked = box.checked; });
      });
    });
    document.body.setAttribute("data-ready", "1");
  });
})();
`;
