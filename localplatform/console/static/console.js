// The mlfn console: polls the platform's /_mlfn/ JSON API and redraws, without a reload.
// No framework, no build step, no network beyond the gateway that served this page.
"use strict";

const API = "/_mlfn/";
const POLL_MS = 1500;
const SVG = "http://www.w3.org/2000/svg";

const state = { graph: null, graphKey: "", status: null, models: null, failures: 0 };

// --- small DOM helpers ------------------------------------------------------------------
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined) continue;
    if (k === "class") node.className = v;
    else if (k === "title") node.title = v;
    else node.setAttribute(k, v);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function num(x) {
  return (x || 0).toLocaleString("en-US");
}

function ms(seconds) {
  return `${Math.round(seconds * 1000)} ms`;
}

function clip(text, n) {
  return text.length > n ? text.slice(0, n - 1) + "…" : text;
}

async function getJSON(path) {
  const resp = await fetch(API + path, { cache: "no-store" });
  if (!resp.ok) throw new Error(`${path}: HTTP ${resp.status}`);
  return resp.json();
}

// --- the pipeline graph: layered layout, drawn in SVG ---------------------------------------
const BOX_W = 184, BOX_H = 50, COL_W = 222, ROW_H = 64, PAD = 12;

function layout(graph) {
  const ids = graph.nodes.map((n) => n.id);
  const out = new Map(ids.map((id) => [id, []]));
  const indeg = new Map(ids.map((id) => [id, 0]));
  for (const e of graph.edges) {
    out.get(e.src).push(e.dst);
    indeg.set(e.dst, indeg.get(e.dst) + 1);
  }
  // depth-first from the roots; an edge into the current path closes a cycle: a back edge
  const back = new Set();
  const mark = new Map();
  const visit = (id) => {
    mark.set(id, "open");
    for (const next of out.get(id)) {
      if (mark.get(next) === "open") back.add(`${id}>${next}`);
      else if (!mark.has(next)) visit(next);
    }
    mark.set(id, "done");
  };
  const roots = ids.filter((id) => indeg.get(id) === 0);
  for (const id of [...roots, ...ids]) if (!mark.has(id)) visit(id);
  // longest path over the forward edges
  const rank = new Map(ids.map((id) => [id, 0]));
  for (let pass = 0; pass < ids.length; pass++) {
    let moved = false;
    for (const e of graph.edges) {
      if (back.has(`${e.src}>${e.dst}`)) continue;
      if (rank.get(e.dst) < rank.get(e.src) + 1) {
        rank.set(e.dst, rank.get(e.src) + 1);
        moved = true;
      }
    }
    if (!moved) break;
  }
  // order each column by the mean row of its predecessors (fewer crossings)
  const columns = [];
  for (const id of ids) (columns[rank.get(id)] ||= []).push(id);
  const row = new Map();
  columns.forEach((col, c) => {
    if (c > 0) {
      const key = (id) => {
        const preds = graph.edges.filter((e) => e.dst === id && row.has(e.src)).map((e) => row.get(e.src));
        return preds.length ? preds.reduce((a, b) => a + b, 0) / preds.length : 1e9;
      };
      col.sort((a, b) => key(a) - key(b));
    }
    col.forEach((id, r) => row.set(id, r));
  });
  const height = Math.max(...columns.map((c) => (c ? c.length : 0)));
  const pos = new Map();
  columns.forEach((col, c) => {
    const offset = ((height - col.length) * ROW_H) / 2;
    col.forEach((id, r) => pos.set(id, { x: PAD + c * COL_W, y: PAD + 18 + offset + r * ROW_H }));
  });
  return { pos, back, width: PAD * 2 + columns.length * COL_W - (COL_W - BOX_W), height: PAD * 2 + 18 + height * ROW_H + 30 };
}

function drawGraph(graph) {
  const root = document.getElementById("graph");
  root.replaceChildren();
  const { pos, back, width, height } = layout(graph);
  // scaled to the section's width (never above natural size); the viewBox keeps proportions
  root.setAttribute("viewBox", `0 0 ${width} ${height}`);
  root.style.width = "100%";
  root.style.maxWidth = `${width}px`;
  root.style.height = "auto";
  const defs = svg("defs");
  const marker = svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: "10", refY: "5", markerWidth: "7", markerHeight: "7", orient: "auto-start-reverse" });
  marker.append(svg("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "#9ca3af" }));
  defs.append(marker);
  root.append(defs);
  for (const e of graph.edges) {
    const a = pos.get(e.src), b = pos.get(e.dst);
    let d, lx, ly;
    if (back.has(`${e.src}>${e.dst}`) || b.x <= a.x) {
      // a back edge: leave below the source, come back under the row to the target
      const sx = a.x + BOX_W / 2, sy = a.y + BOX_H, tx = b.x + BOX_W / 2, ty = b.y + BOX_H;
      const low = Math.max(sy, ty) + 26;
      d = `M ${sx} ${sy} C ${sx} ${low}, ${tx} ${low}, ${tx} ${ty}`;
      lx = (sx + tx) / 2; ly = low - 2;
    } else {
      const sx = a.x + BOX_W, sy = a.y + BOX_H / 2, tx = b.x, ty = b.y + BOX_H / 2;
      const mid = (sx + tx) / 2;
      d = `M ${sx} ${sy} C ${mid} ${sy}, ${mid} ${ty}, ${tx} ${ty}`;
      lx = mid; ly = (sy + ty) / 2 - 4;
    }
    const path = svg("path", { d, class: e.dashed ? "edge dashed" : "edge", "marker-end": "url(#arrow)" });
    path.append(svg("title", {}, `${e.src} → ${e.dst}${e.label ? ": " + e.label : ""}`));
    root.append(path);
    if (e.label && !e.dashed) {
      root.append(svg("text", { x: lx, y: ly, class: "edge-label", "text-anchor": "middle" }, clip(e.label, 26)));
    }
  }
  for (const n of graph.nodes) {
    const p = pos.get(n.id);
    const g = svg("g", { class: `node node-${n.kind}`, "data-node": n.id, transform: `translate(${p.x},${p.y})` });
    g.append(svg("rect", { width: BOX_W, height: BOX_H, rx: n.kind === "trigger" ? 14 : 5 }));
    g.append(svg("title", {}, `${n.kind} ${n.label}${n.detail ? "\n" + n.detail : ""}`));
    g.append(svg("text", { x: 8, y: 15, class: "title" }, clip(n.label, 28)));
    g.append(svg("text", { x: 8, y: 29, class: "detail" }, clip(n.detail || n.kind, 34)));
    g.append(svg("text", { x: 8, y: 43, class: "live-figure" }, ""));
    root.append(g);
  }
}

function liveFigures(status) {
  const figures = new Map();
  for (const [name, fn] of Object.entries(status.functions || {})) {
    let ready = 0, served = 0;
    for (const rev of fn.revisions) {
      ready += rev.instances.filter((i) => i.state === "ready").length;
      served += rev.served;
    }
    figures.set(`fn:${name}`, `${ready} ready · ${num(served)} served`);
  }
  const dispatchers = (status.eventing && status.eventing.dispatchers) || [];
  for (const d of dispatchers) {
    const text = `${num(d.delivered)} delivered` + (d.dead_lettered ? ` · ${num(d.dead_lettered)} dead` : "");
    figures.set(`${d.kind === "source" ? "source" : "trigger"}:${d.name}`, text);
  }
  for (const m of (state.models && state.models.models) || []) {
    if (m.latest !== null) figures.set(`model:${m.name}`, `latest v${m.latest} of ${m.versions.length}`);
  }
  for (const g of document.querySelectorAll("#graph g.node")) {
    const text = figures.get(g.getAttribute("data-node"));
    g.querySelector(".live-figure").textContent = text || "";
  }
}

// --- functions -----------------------------------------------------------------------------
function instanceText(rev) {
  const counts = {};
  for (const i of rev.instances) counts[i.state] = (counts[i.state] || 0) + 1;
  const parts = Object.entries(counts).map(([s, n]) => `${n} ${s}`);
  return `${parts.join(", ") || "0"} (desired ${rev.desired})`;
}

function coldStartText(rev) {
  const c = rev.cold_starts[0];
  if (!c) return el("span", { class: "muted" }, "—");
  const phases = Object.entries(c.phases_s).map(([k, v]) => `${k} ${ms(v)}`).join(", ");
  return el("span", { title: `${c.instance}, ${c.ago_s}s ago: ${phases}` }, `${ms(c.total_s)} `, el("span", { class: "muted" }, `(${c.ago_s}s ago, ${rev.cold_starts.length} total)`));
}

function drawFunctions(status) {
  const rows = [];
  for (const [name, fn] of Object.entries(status.functions || {})) {
    fn.revisions.forEach((rev, i) => {
      const models = rev.model_versions && rev.model_versions.length ? "v" + rev.model_versions.join(", v") : rev.model ? `v${rev.model}` : "—";
      rows.push(
        el("tr", { "data-fn": name, "data-revision": rev.name },
          i === 0 ? el("td", { class: "name", rowspan: fn.revisions.length }, name, el("div", { class: "muted" }, fn.kind)) : null,
          el("td", { class: "mono" }, rev.name, rev.name === fn.latest ? el("span", { class: "muted" }, " latest") : null),
          el("td", {}, el("span", { class: "bar", style: `width:${Math.round(rev.traffic_percent * 0.6)}px` }), `${rev.traffic_percent}%`),
          el("td", {}, instanceText(rev), rev.last_failure ? el("div", { class: "bad", title: rev.last_failure }, `${rev.start_failures} start failures`) : null),
          el("td", {}, models),
          el("td", { class: "num" }, num(rev.served)),
          el("td", { class: rev.errors ? "num bad" : "num" }, num(rev.errors)),
          el("td", { class: "num", title: rev.observed.reason }, `${rev.observed.stable.toFixed(2)}${rev.observed.panicking ? " PANIC" : ""}`),
          el("td", {}, coldStartText(rev)),
        ),
      );
    });
  }
  document.getElementById("function-rows").replaceChildren(...rows);
}

// --- sources and triggers ---------------------------------------------------------------
function drawDispatchers(status) {
  const eventing = status.eventing;
  document.getElementById("eventing-off").hidden = Boolean(eventing);
  const list = (eventing && eventing.dispatchers) || [];
  const rows = list.map((d) => {
    const lag = Object.values(d.lag_approximate || {}).reduce((a, b) => a + b, 0);
    const lat = d.latency_ms && d.latency_ms.p50 !== undefined ? `${d.latency_ms.p50} / ${d.latency_ms.p99} ms` : "—";
    return el("tr", { "data-dispatcher": d.name },
      el("td", { class: "name" }, d.name),
      el("td", {}, d.kind),
      el("td", { class: "mono" }, d.topics.join(", ")),
      el("td", {}, d.sink.split("/").filter(Boolean).pop()),
      el("td", { class: "num" }, num(d.delivered)),
      el("td", { class: d.retried ? "num bad" : "num" }, num(d.retried)),
      el("td", { class: d.dead_lettered ? "num bad" : "num" }, num(d.dead_lettered)),
      el("td", { class: "num" }, num(d.filtered)),
      el("td", { class: "num" }, num(lag)),
      el("td", { class: "num" }, lat),
    );
  });
  document.getElementById("dispatcher-rows").replaceChildren(...rows);
}

// --- models: accuracy over time -----------------------------------------------------------
const PLOT_W = 500, PLOT_H = 190, M = { l: 44, r: 34, t: 14, b: 30 };

function plotModel(model) {
  const points = model.versions.filter((v) => typeof v.metrics.accuracy === "number");
  if (!points.length) {
    const why = model.versions.length ? "no version has a holdout accuracy" : "its first version is made when a function serving it starts (bootstrap) or a retrain publishes";
    return el("p", { class: "note", "data-plot": model.name }, why);
  }
  const root = svg("svg", { class: "plot", width: PLOT_W, height: PLOT_H, viewBox: `0 0 ${PLOT_W} ${PLOT_H}`, "data-plot": model.name });
  const times = points.map((v) => Date.parse(v.created));
  let t0 = Math.min(...times), t1 = Math.max(...times);
  if (t1 - t0 < 1000) { t0 -= 30000; t1 += 30000; }
  const accs = points.map((v) => v.metrics.accuracy);
  let a0 = Math.min(...accs), a1 = Math.max(...accs);
  const spread = Math.max(0.02, a1 - a0);
  a0 = Math.max(0, a0 - spread * 0.25); a1 = Math.min(1, a1 + spread * 0.25);
  if (a1 - a0 < 0.01) { a0 = Math.max(0, a1 - 0.01); }
  const x = (t) => M.l + ((t - t0) / (t1 - t0)) * (PLOT_W - M.l - M.r);
  const y = (a) => PLOT_H - M.b - ((a - a0) / (a1 - a0)) * (PLOT_H - M.t - M.b);
  root.append(svg("line", { class: "axis", x1: M.l, y1: PLOT_H - M.b, x2: PLOT_W - M.r, y2: PLOT_H - M.b }));
  root.append(svg("line", { class: "axis", x1: M.l, y1: M.t, x2: M.l, y2: PLOT_H - M.b }));
  for (let k = 0; k <= 4; k++) {
    const a = a0 + ((a1 - a0) * k) / 4;
    root.append(svg("text", { x: M.l - 4, y: y(a) + 3, "text-anchor": "end" }, a.toFixed(3)));
    root.append(svg("line", { class: "axis", x1: M.l - 2, y1: y(a), x2: M.l, y2: y(a) }));
  }
  for (let k = 0; k <= 3; k++) {
    const t = t0 + ((t1 - t0) * k) / 3;
    const anchor = k === 0 ? "start" : k === 3 ? "end" : "middle";
    root.append(svg("text", { x: x(t), y: PLOT_H - M.b + 14, "text-anchor": anchor }, new Date(t).toLocaleTimeString("en-GB")));
  }
  root.append(svg("text", { x: M.l, y: PLOT_H - 4 }, "holdout accuracy over time"));
  // the served path: every version that became latest at some point
  const served = points.filter((v) => v.decision !== "rejected");
  if (served.length > 1) {
    const d = served.map((v, i) => `${i ? "L" : "M"} ${x(Date.parse(v.created)).toFixed(1)} ${y(v.metrics.accuracy).toFixed(1)}`).join(" ");
    root.append(svg("path", { class: "served", d }));
  }
  for (const v of points) {
    const cx = x(Date.parse(v.created)), cy = y(v.metrics.accuracy);
    const g = svg("g", { "data-point": v.version });
    g.append(svg("title", {}, `v${v.version} ${v.decision}: accuracy ${v.metrics.accuracy.toFixed(4)}${v.reason ? "\n" + v.reason : ""}`));
    if (v.decision === "rejected") {
      g.append(svg("path", { class: "rejected", d: `M ${cx - 4} ${cy - 4} L ${cx + 4} ${cy + 4} M ${cx - 4} ${cy + 4} L ${cx + 4} ${cy - 4}` }));
    } else if (v.decision === "bootstrap") {
      g.append(svg("path", { class: "bootstrap", d: `M ${cx} ${cy - 5} L ${cx + 5} ${cy} L ${cx} ${cy + 5} L ${cx - 5} ${cy} z` }));
    } else {
      g.append(svg("circle", { class: "published", cx, cy, r: 4 }));
    }
    if (v.version === model.latest) g.append(svg("circle", { class: "latest", cx, cy, r: 8 }));
    g.append(svg("text", { x: cx + 6, y: cy - 6 }, `v${v.version}`));
    root.append(g);
  }
  return root;
}

function drawModels(models) {
  const blocks = (models.models || []).map((m) => {
    if (!m.versions.length && !m.error) {
      return el("div", { class: "model", "data-model": m.name }, el("h3", {}, m.name, el("span", { class: "muted" }, "  no version yet")), plotModel(m));
    }
    const rows = [...m.versions].reverse().map((v) =>
      el("tr", { "data-version": v.version },
        el("td", { class: "mono" }, `v${v.version}`, v.version === m.latest ? el("span", { class: "muted" }, " latest") : null),
        el("td", {}, new Date(Date.parse(v.created)).toLocaleTimeString("en-GB")),
        el("td", {}, el("span", { class: `pill ${v.decision}` }, v.decision)),
        el("td", { class: "num" }, typeof v.metrics.accuracy === "number" ? v.metrics.accuracy.toFixed(4) : "—"),
        el("td", { class: "num" }, v.metrics.holdout_rows !== undefined ? num(v.metrics.holdout_rows) : "—"),
        el("td", { class: "num" }, v.rows !== null && v.rows !== undefined ? num(v.rows) : "—"),
        el("td", { class: "muted", title: v.reason || "" }, clip(v.reason || v.trigger || "", 60)),
      ),
    );
    const table = el("table", {},
      el("thead", {}, el("tr", {}, ...["version", "time", "decision", "accuracy", "holdout", "rows", "why"].map((h) => el("th", {}, h)))),
      el("tbody", {}, ...rows));
    const title = el("h3", {}, m.name, el("span", { class: "muted" }, m.latest !== null ? `  latest v${m.latest}, ${m.versions.length} versions` : "  no version yet"));
    if (m.error) title.append(el("span", { class: "bad" }, ` ${m.error}`));
    return el("div", { class: "model", "data-model": m.name }, title, plotModel(m), table);
  });
  if (!blocks.length) blocks.push(el("p", { class: "note" }, "no function serves or retrains a model"));
  document.getElementById("model-list").replaceChildren(...blocks);
}

// --- the poll loop -------------------------------------------------------------------------
function setLive(ok, text) {
  const live = document.getElementById("live");
  live.className = ok ? "live ok" : "live down";
  live.textContent = text;
}

async function tick() {
  try {
    const [status, models] = await Promise.all([getJSON("status"), getJSON("models")]);
    state.status = status;
    state.models = models;
    const key = Object.keys(status.functions || {}).join(",");
    if (key !== state.graphKey) {
      state.graph = await getJSON("graph");
      state.graphKey = key;
      drawGraph(state.graph);
    }
    document.getElementById("gateway").textContent = status.gateway;
    document.getElementById("namespace").textContent = status.namespace;
    document.getElementById("broker").textContent = (status.eventing && status.eventing.bootstrap) || "off";
    drawFunctions(status);
    drawDispatchers(status);
    drawModels(models);
    liveFigures(status);
    state.failures = 0;
    setLive(true, `live · updated ${new Date().toLocaleTimeString("en-GB")}`);
  } catch (err) {
    state.failures += 1;
    setLive(false, `the platform does not answer (${err.message}); retrying`);
  } finally {
    setTimeout(tick, state.failures ? Math.min(10000, POLL_MS * 2 ** state.failures) : POLL_MS);
  }
}

tick();
