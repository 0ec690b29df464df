// fusionrec dashboard: draws /v1/analytics/* with uPlot (vendored). No framework, no CDN.
"use strict";
(function () {
  // The admin key never goes in a URL (server logs, history, Referer headers): it is typed into the
  // key form, kept in sessionStorage (this tab only, gone when it closes) and sent as X-API-Key.
  const KEY_STORE = "fusionrec.admin_key";
  const params = new URLSearchParams(location.search);
  const legacyKey = params.has("api_key");
  if (legacyKey) { // an old /dashboard?api_key=... link: take the key out of the address bar and history, unused
    params.delete("api_key");
    const rest = params.toString();
    history.replaceState(null, "", location.pathname + (rest ? "?" + rest : "") + location.hash);
  }
  let apiKey = sessionStorage.getItem(KEY_STORE) || "";
  const headers = () => (apiKey ? { "X-API-Key": apiKey } : {});
  const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4b5563"];
  const state = { campaign: params.get("campaign"), overview: [], plots: {}, loads: 0, lastReport: null };
  window.dashboardState = state; // read by the browser test
  const $ = (id) => document.getElementById(id);
  const fmt = (v, d = 0) => (v === null || v === undefined || Number.isNaN(v)) ? "–" :
    Number(v).toLocaleString("en-US", { maximumFractionDigits: d, minimumFractionDigits: d });
  const pct = (v, d = 1) => (v === null || v === undefined) ? "–" : fmt(100 * v, d) + " %";

  class KeyNeeded extends Error {}

  async function getJSON(url) {
    const r = await fetch(url, { headers: headers() });
    if (r.status === 401 || r.status === 403) {
      askKey(r.status === 403 ? "this key is not an admin key" : apiKey ? "unknown key" : "admin key needed");
      throw new KeyNeeded(url + " -> " + r.status);
    }
    if (!r.ok) throw new Error(url + " -> " + r.status);
    return r.json();
  }

  function askKey(note) {
    $("key-form").hidden = false;
    $("key-forget").hidden = true;
    $("key-note").textContent = note;
    $("key-input").focus();
  }

  function setStatus(text) { $("status").textContent = text; }

  function query() {
    const q = new URLSearchParams({ bucket: $("bucket").value });
    const range = $("range").value;
    const rep = state.lastSpan;
    if (range !== "all" && rep) {
      const end = rep[1] + (state.baseBucket || 3600); // the end of the newest bucket
      q.set("from", String(end - Number(range)));
      q.set("to", String(end));
    }
    return q;
  }

  function renderList() {
    const ul = $("campaign-list");
    const f = $("filter").value.toLowerCase();
    ul.replaceChildren();
    for (const c of state.overview) {
      if (f && !c.campaign_id.toLowerCase().includes(f)) continue;
      const li = document.createElement("li");
      li.dataset.campaign = c.campaign_id;
      if (c.campaign_id === state.campaign) li.className = "active";
      const name = document.createElement("span");
      name.textContent = c.campaign_id;
      const n = document.createElement("span");
      n.className = "muted";
      n.textContent = fmt(c.totals.impressions);
      li.append(name, n);
      li.addEventListener("click", () => selectCampaign(c.campaign_id));
      ul.append(li);
    }
  }

  async function loadOverview() {
    const o = await getJSON("/v1/analytics/overview");
    state.overview = o.campaigns;
    state.baseBucket = o.bucket_s;
    if (!state.campaign && o.campaigns.length) state.campaign = o.campaigns[0].campaign_id;
    renderList();
  }

  function plot(id, series, data) {
    const el = $(id);
    if (state.plots[id]) state.plots[id].destroy();
    el.replaceChildren();
    const xs = data[0];
    const step = (state.lastReport && state.lastReport.bucket_s) || 3600;
    const x = { time: true };
    if (xs.length < 2) x.range = (u, lo, hi) => [(xs[0] || 0) - step, (xs[0] || 0) + step]; // one bucket: pad it
    const opts = { width: Math.max(240, el.clientWidth || 480), height: 240, series: [{}].concat(series),
                   scales: { x }, legend: { live: false } };
    state.plots[id] = new uPlot(opts, data, el);
    el.dataset.points = String(data[0].length);
    // the campaign of the report drawn (a refresh begun before a click on another campaign draws its own)
    el.dataset.campaign = state.lastReport ? state.lastReport.campaign_id : state.campaign;
  }

  // the newest bucket while it still fills (rep.open_bucket) is kept off the lines: drawn, it would
  // look like a fall (a cliff) at the right edge; its counts so far are written under the plot
  const closed = (rep, b) => rep.open_bucket === null || rep.open_bucket === undefined || b !== rep.open_bucket ||
    rep.arms.every((a) => a.buckets.every((x) => x === rep.open_bucket)); // only the open bucket: draw it

  function noteOpenBucket(rep) {
    const el = $("open-bucket");
    if (!el) return;
    let imp = 0, clk = 0;
    for (const a of rep.arms) a.buckets.forEach((b, i) => {
      if (!closed(rep, b)) { imp += a.series.impressions[i]; clk += a.series.clicks[i]; }
    });
    const open = rep.open_bucket !== null && rep.open_bucket !== undefined;
    el.textContent = !open ? "" :
      `current bucket (in progress, not plotted): ${fmt(imp)} impressions, ${fmt(clk)} clicks so far`;
  }

  function drawTraffic(rep) {
    const xs = new Map();
    for (const a of rep.arms) a.buckets.forEach((b, i) => {
      if (!closed(rep, b)) return;
      const r = xs.get(b) || [0, 0];
      r[0] += a.series.impressions[i]; r[1] += a.series.clicks[i]; xs.set(b, r);
    });
    const keys = [...xs.keys()].sort((a, b) => a - b);
    $("plot-traffic").dataset.openBucket = rep.open_bucket === null || rep.open_bucket === undefined ? "" : String(rep.open_bucket);
    noteOpenBucket(rep);
    plot("plot-traffic", [
      { label: "impressions", stroke: COLORS[0], width: 1.5 },
      { label: "clicks", stroke: COLORS[1], width: 1.5 },
    ], [keys, keys.map((k) => xs.get(k)[0]), keys.map((k) => xs.get(k)[1])]);
  }

  function drawCtr(rep) {
    const arms = rep.arms.filter((a) => a.totals.impressions > 0);
    const all = [...new Set(arms.flatMap((a) => a.buckets))].filter((b) => closed(rep, b)).sort((a, b) => a - b);
    const data = [all];
    const series = [];
    arms.forEach((a, j) => {
      const m = new Map(a.buckets.map((b, i) => [b, a.series.impressions[i] ? a.series.clicks[i] / a.series.impressions[i] : null]));
      data.push(all.map((b) => (m.has(b) ? m.get(b) : null)));
      const oneScenario = new Set(arms.map((x) => x.scenario)).size === 1;
      series.push({ label: oneScenario ? a.arm : `${a.arm} / ${a.scenario}`, stroke: COLORS[j % COLORS.length],
                    width: 1.5, spanGaps: true, value: (u, v) => pct(v) });
    });
    plot("plot-ctr", series, data);
  }

  function cell(tr, text, cls) {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    tr.append(td);
  }

  function drawArms(rep, bandit) {
    const tb = $("arms").querySelector("tbody");
    tb.replaceChildren();
    const reqTotal = rep.arms.reduce((s, a) => s + a.totals.requests, 0);
    const pulls = bandit ? bandit.reduce((s, b) => s + (b.pulls || 0), 0) : 0;
    for (const a of rep.arms) {
      const b = bandit ? bandit.find((x) => x.arm === a.arm) : null;
      const tr = document.createElement("tr");
      const t = a.totals;
      cell(tr, a.arm); cell(tr, a.scenario); cell(tr, fmt(t.requests));
      cell(tr, reqTotal ? pct(t.requests / reqTotal) : "–");
      cell(tr, fmt(t.impressions)); cell(tr, fmt(t.clicks)); cell(tr, pct(t.ctr, 2)); cell(tr, fmt(t.carts));
      cell(tr, fmt(t.orders)); cell(tr, fmt(t.revenue, 2)); cell(tr, fmt(t.rewards));
      if (a.arm === "control") { // held back by a hash, not an arm of the optimizer: no share of pulls, no P(best)
        cell(tr, "held back", "control-note"); cell(tr, "not an arm", "control-note");
      } else {
        cell(tr, b && pulls ? pct(b.pulls / pulls) : "–");
        cell(tr, b && b.p_best !== undefined ? pct(b.p_best) : "–");
      }
      tb.append(tr);
    }
  }

  function drawUplift(rep) {
    const box = $("uplift");
    const rows = rep.uplift.filter((u) => u.uplift !== null);
    const W = Math.max(300, Math.min(480, box.clientWidth || 420)), H = 40 + 36 * Math.max(rows.length, 1), L = 110, R = W - 20;
    const lo = Math.min(-0.1, ...rows.map((u) => u.ci_low)), hi = Math.max(0.1, ...rows.map((u) => u.ci_high));
    const x = (v) => L + (R - L) * (v - lo) / (hi - lo);
    const ns = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(ns, "svg");
    svg.setAttribute("width", W); svg.setAttribute("height", H); svg.setAttribute("id", "uplift-svg");
    const add = (tag, attrs, text) => {
      const e = document.createElementNS(ns, tag);
      for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
      if (text !== undefined) e.textContent = text;
      svg.append(e); return e;
    };
    add("line", { x1: x(0), x2: x(0), y1: 10, y2: H - 20, stroke: "#999", "stroke-dasharray": "3,3" });
    add("text", { x: x(0), y: H - 5, "font-size": 11, "text-anchor": "middle" }, "0 %");
    const names = { conversion: "conversion", aos: "AOS (items)", aov: "AOV (value)" };
    rows.forEach((u, i) => {
      const y = 30 + 36 * i;
      const color = u.ci_low > 0 ? "#15803d" : (u.ci_high < 0 ? "#b91c1c" : "#555");
      add("text", { x: 5, y: y + 4, "font-size": 12 }, names[u.metric] || u.metric);
      add("line", { x1: x(u.ci_low), x2: x(u.ci_high), y1: y, y2: y, stroke: color, "stroke-width": 3, class: "ci" });
      add("circle", { cx: x(u.uplift), cy: y, r: 5, fill: color });
      add("text", { x: x(u.uplift), y: y - 9, "font-size": 11, "text-anchor": "middle" },
          `${pct(u.uplift)} [${pct(u.ci_low)}, ${pct(u.ci_high)}]`);
    });
    if (!rows.length) add("text", { x: 10, y: 30, "font-size": 12 }, "no control group data yet");
    box.replaceChildren(svg);
    $("uplift-method").textContent = "uplift = exposed / control − 1; interval: " + rep.uplift_method;
    const tb = $("groups").querySelector("tbody");
    tb.replaceChildren();
    for (const [g, v] of Object.entries(rep.groups)) {
      const t = v.totals, tr = document.createElement("tr");
      cell(tr, g); cell(tr, fmt(t.users)); cell(tr, fmt(t.converted)); cell(tr, fmt(t.orders));
      cell(tr, t.users ? pct(t.converted / t.users) : "–");
      cell(tr, t.orders ? fmt(t.items / t.orders, 2) : "–"); cell(tr, t.orders ? fmt(t.revenue / t.orders, 2) : "–");
      tb.append(tr);
    }
  }

  const safeImage = (src) => /^(https?:\/\/|\/|data:image\/)/.test(src || "");

  function drawTop(id, rows, cards) {
    const ol = $(id);
    ol.replaceChildren();
    for (const [item, n] of rows) {
      const card = (cards || {})[item] || {};
      const li = document.createElement("li");
      li.dataset.item = item;
      if (safeImage(card.image)) {
        const img = document.createElement("img");
        img.src = card.image; img.alt = ""; img.className = "thumb"; img.loading = "lazy";
        li.append(img);
      }
      const title = document.createElement("span");
      title.className = "title";
      title.textContent = card.title || item;
      const meta = document.createElement("span");
      meta.className = "muted";
      meta.textContent = card.title ? ` ${item} · ${fmt(n)}` : ` (${fmt(n)})`;
      li.append(title, meta);
      ol.append(li);
    }
  }

  async function loadCampaign() {
    if (!state.campaign) return;
    const c = encodeURIComponent(state.campaign);
    const ov = state.overview.find((x) => x.campaign_id === state.campaign);
    state.lastSpan = ov ? ov.span : null;
    const q = query();
    const rep = await getJSON(`/v1/analytics/campaigns/${c}?${q}`);
    state.lastReport = rep;
    let bandit = null;
    if (rep.bandit_url) { // the optimizer's pulls and P(best), when the facade serves them
      try {
        const r = await fetch(rep.bandit_url, { headers: headers() });
        if (r.ok) { const b = await r.json(); bandit = b.arms || b; }
      } catch (e) { bandit = null; }
    }
    $("campaign-title").textContent = "campaign " + rep.campaign_id;
    const span = rep.span ? rep.span.map((s) => new Date(s * 1000).toISOString().slice(0, 16).replace("T", " ")) : [];
    const stepText = rep.bucket_s >= 3600 ? `${rep.bucket_s / 3600} h` : `${rep.bucket_s / 60} min`;
    $("campaign-span").textContent = `data ${span.join(" – ")} UTC · step ${stepText} · range ends at the newest data`;
    q.set("format", "csv");
    state.csvUrl = `/v1/analytics/campaigns/${c}?${q}`;
    drawTraffic(rep); drawCtr(rep); drawArms(rep, Array.isArray(bandit) ? bandit : null); drawUplift(rep);
    drawTop("top-impressed", rep.top_items.impressed, rep.items); drawTop("top-clicked", rep.top_items.clicked, rep.items);
    state.loads += 1;
    document.body.dataset.loads = String(state.loads);
  }

  // the ops panel says when its numbers are old: a stale answer (the broker did not confirm the log's ends in
  // time) with its age, no answer at all (503: none yet, or too old) as unavailable; the reason on hover
  function markOps(text, reason) {
    const m = $("ops-stale");
    m.hidden = !text;
    m.textContent = text;
    m.title = reason || "";
  }

  async function loadOps() {
    let o;
    try {
      o = await getJSON("/v1/analytics/ops");
    } catch (e) {
      if (!(e instanceof KeyNeeded)) markOps("unavailable", e.message);
      throw e;
    }
    markOps(o.stale ? `stale (${Math.round(o.age_s)} s old)` : "", o.stale_reason);
    $("ops-rate").textContent = o.events_per_s === null ? "…" : fmt(o.events_per_s, 1);
    $("ops-model").textContent = o.model_version || "none";
    const tb = $("ops-lag").querySelector("tbody");
    tb.replaceChildren();
    for (const p of o.partitions) {
      const tr = document.createElement("tr");
      cell(tr, p.partition); cell(tr, fmt(p.log_end)); cell(tr, p.realtime_lag === null ? "–" : fmt(p.realtime_lag));
      cell(tr, fmt(p.analytics_lag));
      tb.append(tr);
    }
    const dead = $("ops-dead").querySelector("tbody");
    dead.replaceChildren();
    const entries = Object.entries(o.dead_letters);
    if (!entries.length) { const tr = document.createElement("tr"); cell(tr, "none"); dead.append(tr); }
    for (const [reason, n] of entries) { const tr = document.createElement("tr"); cell(tr, reason); cell(tr, fmt(n)); dead.append(tr); }
    drawTrainer(o);
  }

  // the learning loop (issue 12): the serving version's card and the trainer's last verdicts
  function drawTrainer(o) {
    const c = o.serving;
    const m = c && c.metric && c.metrics ? c.metric + " " + fmt(c.metrics[c.metric], 3) +
      (c.champion_metrics ? " (replaced " + fmt(c.champion_metrics[c.metric], 3) + ")" : "") : "";
    $("ops-card").textContent = !c ? "none" : [c.model_name || "", c.window ? "data to " + c.window.end : "",
      c.counts ? fmt(c.counts.events) + " events" : "", m].filter(Boolean).join(" · ");
    const tb = $("ops-trainer").querySelector("tbody");
    tb.replaceChildren();
    const runs = o.trainer_runs || [];
    if (!runs.length) { const tr = document.createElement("tr"); cell(tr, "no run yet"); tb.append(tr); }
    for (const r of runs) {
      const tr = document.createElement("tr");
      tr.className = "run-" + r.verdict;
      cell(tr, new Date(r.ts * 1000).toISOString().slice(11, 19)); cell(tr, r.verdict); cell(tr, r.reason);
      tb.append(tr);
    }
  }

  async function selectCampaign(id) {
    state.campaign = id;
    renderList();
    await refresh(false);
  }

  let chain = Promise.resolve(), pending = 0;
  function refresh(withOverview = true, periodic = false) {
    if (periodic && pending > 0) return chain; // a refresh is already queued
    pending += 1;
    chain = chain.then(async () => {
      try {
        if (withOverview) await loadOverview();
        await loadCampaign();
        await loadOps();
        setStatus("updated " + new Date().toLocaleTimeString());
      } catch (e) {
        setStatus(e instanceof KeyNeeded ? "waiting for the admin key" : "error: " + e.message);
      } finally {
        pending -= 1;
      }
    });
    return chain;
  }

  // CSV through fetch, so the admin key goes in a header (a plain link could not send it)
  $("csv").addEventListener("click", async (ev) => {
    ev.preventDefault();
    if (!state.csvUrl) return;
    const r = await fetch(state.csvUrl, { headers: headers() });
    if (!r.ok) { setStatus("CSV: " + r.status); return; }
    const a = document.createElement("a");
    a.href = URL.createObjectURL(await r.blob());
    a.download = `analytics-${state.campaign}.csv`;
    a.click();
    URL.revokeObjectURL(a.href);
  });
  $("key-form").addEventListener("submit", (ev) => {
    ev.preventDefault(); // never a form submission: the key would end up in a URL or a body to log
    apiKey = $("key-input").value.trim();
    $("key-input").value = "";
    if (apiKey) sessionStorage.setItem(KEY_STORE, apiKey); else sessionStorage.removeItem(KEY_STORE);
    $("key-form").hidden = true;
    $("key-forget").hidden = !apiKey;
    refresh();
  });
  $("key-forget").addEventListener("click", () => {
    apiKey = "";
    sessionStorage.removeItem(KEY_STORE);
    askKey("key forgotten");
  });
  $("key-forget").hidden = !apiKey;
  if (legacyKey) askKey("keys do not go in the URL: enter it here");
  $("range").addEventListener("change", () => refresh(false));
  $("bucket").addEventListener("change", () => refresh(false));
  $("filter").addEventListener("input", renderList);
  if (!legacyKey) refresh();
  setInterval(() => { if ($("key-form").hidden) refresh(true, true); }, 5000);
})();
