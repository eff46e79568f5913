// Draws the chart of a project page from the JSON the page carries (no inline script: the
// Content-Security-Policy allows scripts from the console's own origin only).
"use strict";
(function () {
  const figure = document.getElementById("accuracy");
  const source = document.getElementById("accuracy-data");
  if (!figure || !source || typeof uPlot === "undefined") return;
  const data = JSON.parse(source.textContent);
  if (!data.x.length) { figure.dataset.drawn = "empty"; return; }
  const colours = ["#1f6feb", "#8b949e", "#d29922"];
  const series = [{}].concat(data.series.map((s, i) => ({
    label: s.label,
    stroke: colours[i % colours.length],
    width: i === 0 ? 2 : 1,
    dash: i === 0 ? undefined : [6, 4],
    points: { show: i === 0, size: 7 },
  })));
  const options = {
    width: Math.min(figure.clientWidth || 800, 900),
    height: 280,
    series: series,
    scales: { y: { range: [0, 1] } },
    axes: [{}, { label: "accuracy" }],
  };
  new uPlot(options, [data.x].concat(data.series.map((s) => s.values)), figure);
  figure.dataset.drawn = String(data.x.length);
})();
