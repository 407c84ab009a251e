/* Small SVG charts for the operations dashboard: stacked bars, lines and
 * budget bars. No dependencies. Each chart has labelled axes, a legend, and
 * a tooltip on every bar and point (a <title> for screen readers and a
 * floating box for the mouse).
 *
 * window.SvgCharts.bars(el, {labels, series: [{name, values}], format, xFormat, yTitle, href})
 * window.SvgCharts.lines(el, {labels, series: [{name, values}], format, xFormat, yTitle, yMax})
 * window.SvgCharts.budgets(el, rows, format)
 */
(function () {
  "use strict";

  var NS = "http://www.w3.org/2000/svg";
  var WIDTH = 720, HEIGHT = 260;
  var MARGIN = {top: 12, right: 16, bottom: 44, left: 88};
  // Okabe-Ito, readable by colour-blind people, then two neutrals.
  var COLORS = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000", "#999999"];

  function svgEl(name, attrs, parent) {
    var el = document.createElementNS(NS, name);
    Object.keys(attrs || {}).forEach(function (key) { el.setAttribute(key, attrs[key]); });
    if (parent) parent.appendChild(el);
    return el;
  }

  function text(parent, x, y, content, attrs) {
    var el = svgEl("text", Object.assign({x: x, y: y}, attrs || {}), parent);
    el.textContent = content;
    return el;
  }

  // Round axis steps: 1, 2, 2.5 or 5 times a power of ten.
  function niceTicks(max, count) {
    if (!(max > 0)) return [0];
    var raw = max / count, power = Math.pow(10, Math.floor(Math.log10(raw)));
    var step = [1, 2, 2.5, 5, 10].map(function (m) { return m * power; }).find(function (s) { return s >= raw; });
    var ticks = [];
    for (var v = 0; v < max + step / 2; v += step) ticks.push(v);
    if (ticks[ticks.length - 1] < max) ticks.push(ticks[ticks.length - 1] + step);
    return ticks;
  }

  function tooltip() { return document.getElementById("ops-tooltip"); }

  function withTip(el, content) {
    svgEl("title", {}, el).textContent = content;
    el.setAttribute("data-tip", content);
    el.addEventListener("mousemove", function (event) {
      var tip = tooltip();
      if (!tip) return;
      tip.textContent = content;
      tip.hidden = false;
      tip.style.left = (event.pageX + 12) + "px";
      tip.style.top = (event.pageY + 12) + "px";
    });
    el.addEventListener("mouseleave", function () { var tip = tooltip(); if (tip) tip.hidden = true; });
  }

  function frame(el, yTicks, format, yTitle) {
    el.innerHTML = "";
    var svg = svgEl("svg", {viewBox: "0 0 " + WIDTH + " " + HEIGHT, class: "ops-svg", preserveAspectRatio: "xMidYMid meet"}, el);
    var plotH = HEIGHT - MARGIN.top - MARGIN.bottom, top = yTicks[yTicks.length - 1];
    var y = function (v) { return MARGIN.top + plotH - (top ? v / top : 0) * plotH; };
    var axis = svgEl("g", {class: "ops-axis"}, svg);
    yTicks.forEach(function (tick) {
      svgEl("line", {x1: MARGIN.left, x2: WIDTH - MARGIN.right, y1: y(tick), y2: y(tick), class: "ops-grid-line"}, axis);
      text(axis, MARGIN.left - 6, y(tick) + 4, format(tick), {"text-anchor": "end"});
    });
    if (yTitle) {
      text(axis, 10, MARGIN.top + plotH / 2, yTitle,
           {"text-anchor": "middle", transform: "rotate(-90 10 " + (MARGIN.top + plotH / 2) + ")", class: "ops-axis-title"});
    }
    if (top === 0) {  // nothing to draw: say so rather than invent a scale
      text(svg, MARGIN.left + (WIDTH - MARGIN.left - MARGIN.right) / 2, MARGIN.top + plotH / 2, "no data in this period",
           {"text-anchor": "middle", class: "ops-axis-title"});
    }
    return {svg: svg, y: y, plotH: plotH};
  }

  function xAxis(svg, labels, xFormat, xAt) {
    var axis = svgEl("g", {class: "ops-axis"}, svg);
    var every = Math.max(1, Math.ceil(labels.length / 10));
    var base = HEIGHT - MARGIN.bottom;
    svgEl("line", {x1: MARGIN.left, x2: WIDTH - MARGIN.right, y1: base, y2: base, class: "ops-axis-line"}, axis);
    labels.forEach(function (label, i) {
      if (i % every) return;
      text(axis, xAt(i), base + 16, xFormat(label), {"text-anchor": "middle"});
    });
    text(axis, MARGIN.left + (WIDTH - MARGIN.left - MARGIN.right) / 2, HEIGHT - 6, "time (UTC)",
         {"text-anchor": "middle", class: "ops-axis-title"});
  }

  function legend(el, series) {
    if (!el) return;
    el.innerHTML = "";
    series.forEach(function (s, i) {
      var item = document.createElement("span");
      item.className = "ops-legend-item";
      var swatch = document.createElement("i");
      swatch.style.background = COLORS[i % COLORS.length];
      item.appendChild(swatch);
      item.appendChild(document.createTextNode(s.name));
      el.appendChild(item);
    });
  }

  function bars(el, spec) {
    var labels = spec.labels, series = spec.series;
    var totals = labels.map(function (_, i) {
      return series.reduce(function (sum, s) { return sum + (s.values[i] || 0); }, 0);
    });
    var ticks = niceTicks(Math.max.apply(null, [0].concat(totals)), 4);
    var f = frame(el, ticks, spec.format, spec.yTitle);
    var plotW = WIDTH - MARGIN.left - MARGIN.right, slot = plotW / Math.max(labels.length, 1);
    var barW = Math.max(1, slot * 0.8);
    var xAt = function (i) { return MARGIN.left + slot * i + slot / 2; };
    var g = svgEl("g", {class: "ops-bars"}, f.svg);
    labels.forEach(function (label, i) {
      var base = 0;
      series.forEach(function (s, j) {
        var v = s.values[i] || 0;
        if (!v) return;
        // spec.href(label, name): where the bar leads (its usage records), or nothing.
        var href = spec.href ? spec.href(label, s.name) : null, parent = g;
        if (href) parent = svgEl("a", {href: href, "data-href": href}, g);
        var rect = svgEl("rect", {x: xAt(i) - barW / 2, width: barW, y: f.y(base + v), height: f.y(base) - f.y(base + v),
                                  fill: COLORS[j % COLORS.length]}, parent);
        withTip(rect, spec.xFormat(label) + " · " + s.name + ": " + spec.format(v) + " (total " + spec.format(totals[i]) + ")");
        base += v;
      });
    });
    xAxis(f.svg, labels, spec.xFormat, xAt);
    legend(spec.legend, series);
  }

  function lines(el, spec) {
    var labels = spec.labels, series = spec.series;
    var all = [0];
    series.forEach(function (s) { s.values.forEach(function (v) { if (v !== null) all.push(v); }); });
    var ticks = spec.yMax ? niceTicks(spec.yMax, 4) : niceTicks(Math.max.apply(null, all), 4);
    var f = frame(el, ticks, spec.format, spec.yTitle);
    var plotW = WIDTH - MARGIN.left - MARGIN.right;
    var xAt = function (i) { return MARGIN.left + (labels.length > 1 ? plotW * i / (labels.length - 1) : plotW / 2); };
    series.forEach(function (s, j) {
      var color = COLORS[j % COLORS.length], g = svgEl("g", {class: "ops-line"}, f.svg), d = "", pen = "M";
      s.values.forEach(function (v, i) {
        if (v === null) { pen = "M"; return; }  // a gap: no traffic in that bucket
        d += pen + xAt(i).toFixed(1) + " " + f.y(v).toFixed(1) + " ";
        pen = "L";
      });
      svgEl("path", {d: d, fill: "none", stroke: color, "stroke-width": 2}, g);
      s.values.forEach(function (v, i) {
        if (v === null) return;
        var dot = svgEl("circle", {cx: xAt(i), cy: f.y(v), r: labels.length > 60 ? 2 : 3.5, fill: color}, g);
        withTip(dot, spec.xFormat(labels[i]) + " · " + s.name + ": " + spec.format(v));
      });
    });
    xAxis(f.svg, labels, spec.xFormat, xAt);
    legend(spec.legend, series);
  }

  // One row per budget: spent (solid), projected to the period's end
  // (light), and the limit (a dark mark), on a shared scale.
  function budgets(el, rows, format) {
    el.innerHTML = "";
    if (!rows.length) { el.textContent = "No active budgets."; return; }
    var rowH = 26, labelW = 220, height = rows.length * rowH + 30;
    var svg = svgEl("svg", {viewBox: "0 0 " + WIDTH + " " + height, class: "ops-svg"}, el);
    var max = Math.max.apply(null, rows.map(function (r) {
      return Math.max(r.limit_nanos, r.spent_nanos, r.projected_nanos || 0);
    }).concat([1]));
    var ticks = niceTicks(max, 4), top = ticks[ticks.length - 1], plotW = WIDTH - labelW - MARGIN.right;
    var x = function (v) { return labelW + (v / top) * plotW; };
    var axis = svgEl("g", {class: "ops-axis"}, svg);
    ticks.forEach(function (tick) {
      svgEl("line", {x1: x(tick), x2: x(tick), y1: 0, y2: rows.length * rowH, class: "ops-grid-line"}, axis);
      text(axis, x(tick), rows.length * rowH + 14, format(tick), {"text-anchor": "middle"});
    });
    text(axis, labelW + plotW / 2, height - 2, "USD this period", {"text-anchor": "middle", class: "ops-axis-title"});
    rows.forEach(function (r, i) {
      var y = i * rowH + 4, g = svgEl("g", {}, svg);
      text(g, labelW - 8, y + 13, r.owner + " (" + r.period + ")", {"text-anchor": "end"});
      if (r.projected_nanos !== null) {
        svgEl("rect", {x: labelW, y: y, height: 18, width: x(r.projected_nanos) - labelW, class: "ops-projected"}, g);
      }
      var over = r.spent_nanos * 100 >= r.limit_nanos * r.soft_limit_percent;
      svgEl("rect", {x: labelW, y: y, height: 18, width: x(r.spent_nanos) - labelW, class: over ? "ops-spent ops-over" : "ops-spent"}, g);
      svgEl("line", {x1: x(r.limit_nanos), x2: x(r.limit_nanos), y1: y - 2, y2: y + 20, class: "ops-limit"}, g);
      withTip(g, r.owner + ": " + format(r.spent_nanos) + " spent of " + format(r.limit_nanos) +
                 (r.projected_nanos !== null ? ", projected " + format(r.projected_nanos) : ""));
    });
  }

  window.SvgCharts = {bars: bars, lines: lines, budgets: budgets, niceTicks: niceTicks, COLORS: COLORS};
})();
