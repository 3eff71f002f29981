// Tollgate operators' dashboard. Reads GET /analytics/requests with the token the operator
// pasted (kept in this tab's sessionStorage only), draws charts with the vendored uPlot.
"use strict";

(function () {
  const TOKEN_KEY = "tollgate.token";
  const $ = (id) => document.getElementById(id);
  const charts = {};
  let timer = null;
  let loading = false;

  function token() {
    return sessionStorage.getItem(TOKEN_KEY) || "";
  }

  function setStatus(text, error) {
    const el = $("status");
    el.textContent = text;
    el.className = error ? "status error" : "status";
  }

  function fmtInt(n) {
    return String(n);
  }

  function fmtBytes(n) {
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    let v = n;
    while (v >= 1024 && i < units.length - 1) {
      v /= 1024;
      i++;
    }
    return (i === 0 ? String(v) : v.toFixed(1)) + " " + units[i];
  }

  function fmtMs(v) {
    return v === null || v === undefined ? "–" : v.toFixed(v < 10 ? 2 : 1) + " ms";
  }

  async function api(path) {
    const resp = await fetch(path, { headers: { Authorization: "Bearer " + token() } });
    if (resp.status === 401) {
      throw new Error("The token was refused (401): paste a valid admin or operator token.");
    }
    if (!resp.ok) {
      let detail = "";
      try {
        detail = (await resp.json()).detail || "";
      } catch (_) {
        /* not JSON */
      }
      throw new Error("GET " + path + " answered " + resp.status + (detail ? ": " + detail : ""));
    }
    return resp.json();
  }

  function query(groupBy, from, to, limit) {
    const p = new URLSearchParams({ group_by: groupBy, from: from, to: to });
    if (limit) p.set("limit", String(limit));
    return api("/analytics/requests?" + p.toString());
  }

  function isoSeconds(d) {
    return d.toISOString().replace(/\.\d{3}Z$/, "Z");
  }

  // Every bucket of the range, so quiet minutes show as zeros.
  function buckets(fromSec, toSec, step) {
    const out = [];
    for (let t = Math.floor(fromSec / step) * step; t < toSec; t += step) out.push(t);
    return out;
  }

  // One value per bucket: `empty` where the bucket had no calls (0 for counts, null for
  // latencies, which uPlot draws as a gap).
  function series(rows, times, pick, empty = 0) {
    const byTime = new Map();
    for (const r of rows) byTime.set(Date.parse(r.key) / 1000, r);
    return times.map((t) => {
      const r = byTime.get(t);
      return r ? pick(r) : empty;
    });
  }

  function draw(id, title, data, names, colors) {
    const el = $(id);
    const width = Math.max(300, el.clientWidth || 480);
    const opts = {
      width: width,
      height: 220,
      legend: { show: true },
      cursor: { drag: { x: false, y: false } },
      scales: { x: { time: true } },
      axes: [{}, { size: 60 }],
      series: [{}].concat(
        names.map((n, i) => ({
          label: n,
          stroke: colors[i],
          width: 2,
          // Points where a line would not show (a single busy minute among quiet ones).
          points: { show: (u, si, i0, i1) => i1 - i0 < 100, size: 5 },
        }))
      ),
    };
    if (charts[id]) {
      charts[id].destroy();
    }
    el.textContent = "";
    charts[id] = new uPlot(opts, data, el);
  }

  function table(id, rows) {
    const t = $(id);
    t.textContent = "";
    const head = t.insertRow();
    for (const h of ["key", "calls", "success", "blocked", "failed", "p95"]) {
      const th = document.createElement("th");
      th.textContent = h;
      head.appendChild(th);
    }
    if (rows.length === 0) {
      const r = t.insertRow();
      const c = r.insertCell();
      c.colSpan = 6;
      c.className = "none";
      c.textContent = "no calls";
      return;
    }
    for (const row of rows.slice(0, 10)) {
      const r = t.insertRow();
      r.dataset.key = row.key === null ? "" : row.key;
      const k = r.insertCell();
      k.title = row.key === null ? "calls without one" : row.key;
      if (row.key === null) {
        k.textContent = "(none)";
        k.className = "none";
      } else {
        k.textContent = row.key;
      }
      for (const v of [row.calls_total, row.calls_success, row.calls_blocked, row.calls_failed]) {
        r.insertCell().textContent = fmtInt(v);
      }
      r.insertCell().textContent = fmtMs(row.latency_ms_p95);
    }
  }

  function kpis(total) {
    $("kpi-calls").textContent = fmtInt(total.calls_total);
    $("kpi-success").textContent = fmtInt(total.calls_success);
    $("kpi-blocked").textContent = fmtInt(total.calls_blocked);
    $("kpi-failed").textContent = fmtInt(total.calls_failed);
    $("kpi-other").textContent = fmtInt(total.calls_other);
    $("kpi-latency").textContent =
      fmtMs(total.latency_ms_p50) + " / " + fmtMs(total.latency_ms_p95) + " / " + fmtMs(total.latency_ms_p99);
    $("kpi-bandwidth").textContent = fmtBytes(total.bytes_in) + " / " + fmtBytes(total.bytes_out);
    const lookups = total.cache_hits + total.cache_misses;
    $("kpi-cache").textContent =
      lookups === 0 ? "–" : ((100 * total.cache_hits) / lookups).toFixed(1) + " %";
    $("kpi-rate-limited").textContent = fmtInt(total.calls_rate_limited);
    $("kpi-quota").textContent = fmtInt(total.calls_quota_exceeded);
  }

  async function load() {
    if (!token() || loading) return;
    loading = true;
    try {
      const range = Number($("range").value);
      const now = new Date();
      const toSec = Math.floor(now.getTime() / 1000) + 1;
      const fromSec = toSec - range;
      const from = isoSeconds(new Date(fromSec * 1000));
      const to = isoSeconds(new Date(toSec * 1000));
      const step = range <= 86400 ? 60 : 3600;
      const [time, products, apis, operations, subscriptions] = await Promise.all([
        query(step === 60 ? "minute" : "hour", from, to, 10000),
        query("product", from, to, 10),
        query("api", from, to, 10),
        query("operation", from, to, 10),
        query("subscription", from, to, 10),
      ]);
      $("main").hidden = false;
      kpis(time.total);
      const times = buckets(fromSec, toSec, step);
      const rows = time.items;
      const s = (f) => series(rows, times, f);
      draw(
        "chart-calls",
        "Calls",
        [times, s((r) => r.calls_success), s((r) => r.calls_blocked), s((r) => r.calls_failed), s((r) => r.calls_other)],
        ["success", "blocked", "failed", "other"],
        ["#1f9d55", "#d97706", "#d14343", "#667085"]
      );
      const ms = (f) => series(rows, times, f, null);
      draw(
        "chart-latency",
        "Latency",
        [times, ms((r) => r.latency_ms_p50), ms((r) => r.latency_ms_p95), ms((r) => r.latency_ms_p99)],
        ["p50", "p95", "p99"],
        ["#2f5bd3", "#8a63d2", "#d14343"]
      );
      draw(
        "chart-bandwidth",
        "Bandwidth",
        [times, s((r) => r.bytes_in), s((r) => r.bytes_out)],
        ["in", "out"],
        ["#0e9aa7", "#2f5bd3"]
      );
      draw(
        "chart-rejections",
        "Rejections",
        [times, s((r) => r.calls_rate_limited), s((r) => r.calls_quota_exceeded), s((r) => r.calls_blocked)],
        ["rate-limited", "quota exceeded", "all blocked"],
        ["#d97706", "#a16207", "#667085"]
      );
      table("top-product", products.items);
      table("top-api", apis.items);
      table("top-operation", operations.items);
      table("top-subscription", subscriptions.items);
      $("range-text").textContent = time.from + " – " + time.to;
      $("resolution").textContent = time.resolution;
      $("updated").textContent = new Date().toLocaleTimeString();
      setStatus("Loaded: " + time.total.calls_total + " calls in range.", false);
      document.body.dataset.loaded = String(Date.now());
    } catch (e) {
      setStatus(e.message || String(e), true);
    } finally {
      loading = false;
    }
  }

  function schedule() {
    if (timer) clearInterval(timer);
    timer = $("auto").checked ? setInterval(load, 10000) : null;
  }

  $("token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const t = $("token").value.trim();
    if (!t) return;
    sessionStorage.setItem(TOKEN_KEY, t);
    $("token").value = "";
    $("token").placeholder = "token set for this tab";
    load();
  });
  $("token-forget").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    $("token").placeholder = "admin or operator token";
    $("main").hidden = true;
    setStatus("Token forgotten. Paste an admin or operator token to load the analytics.", false);
  });
  $("range").addEventListener("change", load);
  $("refresh").addEventListener("click", load);
  $("auto").addEventListener("change", schedule);
  window.addEventListener("resize", () => {
    if (token()) load();
  });

  if (token()) {
    $("token").placeholder = "token set for this tab";
    load();
  }
  schedule();
})();
