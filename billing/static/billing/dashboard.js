/* The operations dashboard: charts from the JSON endpoint (refreshed every
 * minute) and the live request feed over a WebSocket. Money arrives as
 * integer nano-dollars and is only formatted here. */
(function () {
  "use strict";

  var FEED_ROWS = 100;  // newest on top; older rows fall off
  var REFRESH_MS = 60000;
  var charts = window.SvgCharts;

  function usd(nanos) {
    var v = nanos / 1e9;
    if (v === 0) return "$0";
    if (Math.abs(v) >= 100) return "$" + v.toFixed(0);
    if (Math.abs(v) >= 1) return "$" + v.toFixed(2);
    if (Math.abs(v) >= 0.01) return "$" + v.toFixed(3);
    return "$" + v.toPrecision(2);
  }
  function percent(rate) { return (rate * 100).toFixed(rate < 0.1 && rate > 0 ? 1 : 0) + "%"; }
  function ms(v) { return v >= 1000 ? (v / 1000).toFixed(v >= 10000 ? 0 : 1) + " s" : Math.round(v) + " ms"; }
  function count(v) { return v >= 1e6 ? (v / 1e6).toFixed(1) + "M" : v >= 1e4 ? (v / 1e3).toFixed(0) + "k" : String(v); }
  function day(iso) { return iso.slice(5, 10); }
  function hour(iso) { return iso.slice(5, 10) + " " + iso.slice(11, 13) + "h"; }

  function plot(name) { return document.querySelector('[data-chart="' + name + '"]'); }
  function legendOf(name) { return document.querySelector('[data-legend="' + name + '"]'); }

  // A figure drawing two charts gets two boxes, created once.
  function boxes(name, n) {
    var el = plot(name);
    if (el.children.length !== n || !el.children[0].classList.contains("ops-subplot")) {
      el.innerHTML = "";
      for (var i = 0; i < n; i++) {
        var box = document.createElement("div");
        box.className = "ops-subplot";
        el.appendChild(box);
      }
    }
    return Array.prototype.slice.call(el.children);
  }

  // --- Links to the usage records behind a bar or a feed row ---------------------

  var HOUR_MS = 3600000, DAY_MS = 24 * HOUR_MS;

  // The usage list with these filters; null for staff who may not read usage records.
  function usageLink(filters) {
    var root = document.getElementById("content-main"), base = root.getAttribute("data-usage-url");
    if (!base) return null;
    var tenant = root.getAttribute("data-tenant"), query = [];
    if (tenant && !filters.tenant) filters.tenant = tenant;  // the page's tenant, always
    Object.keys(filters).forEach(function (name) {
      if (filters[name] !== null && filters[name] !== undefined && filters[name] !== "") {
        query.push(encodeURIComponent(name) + "=" + encodeURIComponent(filters[name]));
      }
    });
    return base + (query.length ? "?" + query.join("&") : "");
  }

  // A bucket [label, label + step) as the list's since/until.
  function bucketLink(label, stepMs, filters) {
    filters.since = label;
    filters.until = new Date(Date.parse(label) + stepMs).toISOString();
    return usageLink(filters);
  }

  function draw(data) {
    var t = data.traffic, when = t.granularity === "hour" ? hour : day;
    var step = t.granularity === "hour" ? HOUR_MS : DAY_MS;
    var by = {spend_by_tenant: "tenant", spend_by_model: "model"};
    [["spend_by_tenant", data.spend_by_tenant], ["spend_by_model", data.spend_by_model]].forEach(function (pair) {
      charts.bars(plot(pair[0]), {labels: pair[1].labels, series: pair[1].series, format: usd, xFormat: day,
                                  yTitle: "USD per day", legend: legendOf(pair[0]),
                                  href: function (label, name) {
                                    if (name === "other") return null;  // many tenants or models: no one list
                                    var filters = {};
                                    filters[by[pair[0]]] = name;
                                    return bucketLink(label, DAY_MS, filters);
                                  }});
    });
    var ok = t.requests.map(function (r, i) { return r - t.errors[i]; });
    var requests = boxes("requests", 2);
    charts.bars(requests[0], {labels: t.labels, format: count, xFormat: when, yTitle: "requests",
                              series: [{name: "succeeded", values: ok}, {name: "failed", values: t.errors}],
                              legend: legendOf("requests"),
                              href: function (label, name) {
                                return bucketLink(label, step, {status: name === "failed" ? "failed" : "ok"});
                              }});
    charts.lines(requests[1], {labels: t.labels, format: percent, xFormat: when, yTitle: "error rate",
                               series: [{name: "error rate", values: t.error_rate}]});
    charts.lines(plot("latency"), {labels: t.labels, format: ms, xFormat: when, yTitle: "milliseconds",
                                   legend: legendOf("latency"), series: [
      {name: "latency p50", values: t.latency_p50_ms}, {name: "latency p95", values: t.latency_p95_ms},
      {name: "time to first token p50", values: t.ttft_p50_ms}, {name: "time to first token p95", values: t.ttft_p95_ms},
    ]});
    var cache = boxes("cache", 2);
    charts.lines(cache[0], {labels: t.labels, format: percent, xFormat: when, yTitle: "hit rate", yMax: 1,
                            series: [{name: "cache hit rate", values: t.cache_hit_rate}]});
    charts.bars(cache[1], {labels: t.labels, format: usd, xFormat: when, yTitle: "USD saved",
                           series: [{name: "saved by the cache", values: t.saved_nanos}], legend: legendOf("cache"),
                           href: function (label) { return bucketLink(label, step, {cache_hit__exact: "1"}); }});
    charts.budgets(plot("budgets"), data.budgets, usd);
  }

  function load(root) {
    var url = root.getAttribute("data-data-url") + "?days=" + encodeURIComponent(root.getAttribute("data-days"));
    if (root.getAttribute("data-tenant")) url += "&tenant=" + encodeURIComponent(root.getAttribute("data-tenant"));
    return fetch(url, {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (response) {
        if (!response.ok) throw new Error("dashboard data: HTTP " + response.status);
        return response.json();
      })
      .then(function (data) { draw(data); root.setAttribute("data-drawn", data.now); })
      .catch(function (error) { console.error(error); });
  }

  // --- Live feed -------------------------------------------------------------

  // Each cell of a row links to the usage records it names (the time: this request's).
  function cell(row, content, className, filters) {
    var td = document.createElement("td"), href = filters ? usageLink(filters) : null;
    if (href) {
      var a = document.createElement("a");
      a.href = href;
      a.textContent = content;
      td.appendChild(a);
    } else {
      td.textContent = content;
    }
    if (className) td.className = className;
    row.appendChild(td);
  }

  function feedRow(event) {
    var row = document.createElement("tr");
    row.setAttribute("data-request-id", event.request_id);
    cell(row, event.time.slice(11, 19), "", {q: event.request_id});
    cell(row, event.tenant, "", {tenant: event.tenant});
    cell(row, event.key_prefix, "", {key: event.key_prefix});
    cell(row, event.model + (event.cache_hit ? " (cached)" : ""), "", {model: event.model});
    cell(row, String(event.status), event.status >= 400 ? "ops-status-failed" : "ops-status-ok", {status: String(event.status)});
    cell(row, event.input_tokens + " / " + event.output_tokens);
    cell(row, event.cost_usd);
    cell(row, ms(event.latency_ms) + (event.ttft_ms !== null ? " (first token " + ms(event.ttft_ms) + ")" : ""));
    return row;
  }

  function openFeed(delay) {
    var body = document.querySelector("#live-feed tbody"), state = document.getElementById("live-feed-state");
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    var tenant = document.getElementById("content-main").getAttribute("data-tenant");  // the page's tenant only
    var socket = new WebSocket(scheme + location.host + "/ws/live/" + (tenant ? "?tenant=" + encodeURIComponent(tenant) : ""));
    socket.onopen = function () { state.textContent = "live"; state.className = "ops-feed-state live"; delay = 1000; };
    socket.onmessage = function (message) {
      JSON.parse(message.data).forEach(function (event) {
        body.insertBefore(feedRow(event), body.firstChild);
      });
      while (body.children.length > FEED_ROWS) body.removeChild(body.lastChild);
    };
    socket.onclose = function () {
      // A refused handshake (signed out) also lands here, as 1006: back off, the login may come back.
      state.className = "ops-feed-state";
      state.textContent = "reconnecting…";
      setTimeout(function () { openFeed(Math.min(delay * 2, 30000)); }, delay);
    };
  }

  document.addEventListener("DOMContentLoaded", function () {
    var root = document.getElementById("content-main");
    load(root);
    setInterval(function () { load(root); }, REFRESH_MS);
    openFeed(1000);
  });
})();
