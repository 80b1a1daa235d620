// berth dashboard: one server-sent event stream keeps S, the cluster as
// the API reports it; each view draws from S. The map updates its tiles in
// place, so a change touches only the tiles that changed.
"use strict";
const S = {node: {}, service: {}, job: {}, instance: {}, events: [], eventKeys: new Set(), connected: false};
const csrf = document.querySelector("meta[name=csrf]").content;
const view = document.getElementById("view");
const restartedAt = {}; // instance key → when its restart count last rose
const FLASH_MS = 3000;

function esc(s) { return String(s ?? "").replace(/[&<>"']/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c])); }
function key(m) { return m.namespace ? m.namespace + "/" + m.name : m.name; }
function el(tag, attrs, text) { const e = document.createElement(tag); for (const k in attrs || {}) e.setAttribute(k, attrs[k]); if (text != null) e.textContent = text; return e; }
function mem(q) {
  if (!q) return 0; const m = /^([\d.]+)([KMGT]i?|k)?$/.exec(String(q)); if (!m) return Number(q) || 0;
  const u = {k: 1e3, M: 1e6, G: 1e9, T: 1e12, Ki: 1024, Mi: 1048576, Gi: 1073741824, Ti: 1099511627776}[m[2]] || 1;
  return Number(m[1]) * u;
}
function fmtMem(b) { return b >= 1073741824 ? (b / 1073741824).toFixed(1) + "Gi" : b >= 1048576 || !b ? (b / 1048576).toFixed(0) + "Mi" : (b / 1024).toFixed(0) + "Ki"; }
function age(t) { if (!t) return "—"; const s = Math.max(0, (Date.now() - Date.parse(t)) / 1000); return s < 90 ? s.toFixed(0) + "s" : s < 5400 ? (s / 60).toFixed(0) + "m" : (s / 3600).toFixed(1) + "h"; }

// state says how a tile is colored: ok (running, healthy), wait (on its
// way), bad (failed, lost, or its container just died and was restarted),
// done (finished).
function state(i, now) {
  const st = i.status || {}, ph = st.phase || "Pending", k = key(i.metadata);
  if (ph === "Failed" || ph === "Lost") return "bad";
  if (ph === "Succeeded") return "done";
  if (restartedAt[k] && now - restartedAt[k] < FLASH_MS) return "bad";
  if (ph === "Running") return (st.healthy || !(i.spec.template || {}).health) ? "ok" : "wait";
  return "wait";
}

function apply(kind, k, obj) {
  if (kind === "event") {
    if (!obj || S.eventKeys.has(k)) return;
    S.eventKeys.add(k); S.events.push(obj);
    if (S.events.length > 500) S.eventKeys.delete(key(S.events.shift().metadata));
    return;
  }
  const old = S[kind][k];
  if (kind === "instance" && obj) {
    if (old && ((obj.status || {}).restarts || 0) > ((old.status || {}).restarts || 0)) restartedAt[k] = Date.now();
  }
  // A change to an instance's status alone redraws its tile alone (see
  // renderers.map); anything that moves, adds or removes tiles redraws all.
  if (kind === "instance" && obj && old && sameTileSpot(old, obj)) changedTiles.add(k); else layoutChanged = true;
  if (obj) S[kind][k] = obj; else delete S[kind][k];
}
let changedTiles = new Set(), layoutChanged = true;
function sameTileSpot(a, b) {
  return a.spec.node === b.spec.node && (a.spec.owner || {}).name === (b.spec.owner || {}).name && String(a.spec.cpuset || "") === String(b.spec.cpuset || "");
}

function connect() {
  const es = new EventSource("/ui/stream");
  const live = document.getElementById("live");
  es.addEventListener("snapshot", e => {
    const d = JSON.parse(e.data);
    for (const kind of ["node", "service", "job", "instance"]) {
      S[kind] = {};
      for (const [k, o] of Object.entries(d.objects[kind] || {})) S[kind][k] = o;
    }
    S.events = []; S.eventKeys = new Set();
    for (const ev of d.events || []) apply("event", key(ev.metadata), ev);
    S.connected = true; live.textContent = "live"; build();
    if (!performance.getEntriesByName("berth:drawn").length) performance.mark("berth:drawn"); // the first view drawn with data, for make bench
  });
  es.addEventListener("batch", e => {
    const d = JSON.parse(e.data);
    for (const c of d.changes) apply(c.kind, c.key, c.obj);
    // Drawn now, not at the next frame: batches come at most one per
    // flush interval, and most touch a few tiles.
    render();
  });
  es.onerror = () => { live.textContent = "reconnecting…"; };
}

async function act(body, confirmText) {
  if (confirmText && !confirm(confirmText)) return false;
  const r = await fetch("/ui/act", {method: "POST", headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf}, body: JSON.stringify(body), credentials: "same-origin"});
  const toast = document.getElementById("toast");
  if (!r.ok) { const e = await r.json().catch(() => ({error: r.statusText})); toast.textContent = body.action + " " + body.name + ": " + e.error; setTimeout(() => toast.textContent = "", 6000); return false; }
  return true;
}

// ---- views ----
let route = [], built = "";
function parseRoute() { return (location.hash.replace(/^#\/?/, "") || "map").split("/").map(decodeURIComponent); }
window.addEventListener("hashchange", () => build());

// The log view: one stream per open instance page, closed when the page changes.
let logStream = null;
const LOG_LINES = 2000;
function openLog(v, ns, name) {
  const pre = v.querySelector("#log"), state = v.querySelector("#log-state"), follow = v.querySelector("#log-follow");
  const es = new EventSource("/ui/logs?namespace=" + encodeURIComponent(ns) + "&name=" + encodeURIComponent(name));
  logStream = es;
  state.textContent = "connecting…";
  es.onopen = () => { state.textContent = "following"; };
  es.addEventListener("line", e => {
    const d = JSON.parse(e.data), line = el("span", {class: d.s === "err" ? "err" : ""}, d.t + "\n");
    pre.appendChild(line);
    while (pre.childNodes.length > LOG_LINES) pre.firstChild.remove();
    if (follow.checked) pre.scrollTop = pre.scrollHeight;
  });
  const stop = text => { es.close(); state.textContent = text; };
  es.addEventListener("end", () => stop("the container has exited"));
  es.addEventListener("failed", e => stop("logs: " + JSON.parse(e.data).error));
  es.onerror = () => { if (es.readyState === EventSource.CLOSED) stop("logs unavailable"); };
}

// ---- charts: CPU and memory over the last minutes, from /ui/metrics ----
// M holds the series the page has fetched (key → [[t, cpu, mem], ...]);
// while a view with charts is open it asks for the samples since the
// last it has, every interval the server names.
const M = {series: {}, last: 0, timer: null, query: "", window: 10 * 60 * 1000};
function stopCharts() { if (M.timer) { clearTimeout(M.timer); M.timer = null; } }
function startCharts(query) {
  stopCharts();
  if (M.query !== query) { M.series = {}; M.last = 0; M.query = query; }
  const tick = async () => {
    let wait = 2000;
    try {
      const r = await fetch("/ui/metrics?since=" + M.last + "&" + query, {credentials: "same-origin"});
      if (r.ok) {
        const d = await r.json(); wait = d.interval || wait;
        const cut = d.now - M.window;
        for (const [k, l] of Object.entries(d.series)) {
          const have = (M.series[k] ||= []);
          for (const x of l) if (x[0] > M.last) have.push(x);
        }
        for (const k in M.series) { const l = M.series[k]; let i = 0; while (i < l.length && l[i][0] < cut) i++; if (i) l.splice(0, i); if (!l.length) delete M.series[k]; }
        for (const l of Object.values(d.series)) if (l.length) M.last = Math.max(M.last, l[l.length - 1][0]);
        drawCharts();
      }
    } catch (e) { /* the next tick tries again */ }
    if (M.query === query && M.timer !== null) M.timer = setTimeout(tick, wait);
  };
  M.timer = setTimeout(tick, 0);
}
function fmtCPU(v) { return v >= 10 ? v.toFixed(0) : v >= 1 ? v.toFixed(1) : v >= 0.1 ? v.toFixed(2) : (v * 1000).toFixed(0) + "m"; }
// chart draws the series named (label → key) of field f (1 CPU, 2 memory) as lines in an SVG.
function chart(title, lines, f, fmt) {
  // The time axis runs from the oldest sample (at most the window back) to now, so a new chart fills its width.
  const W = 600, H = 140, now = Date.now();
  let max = 0, from = now - 1000;
  for (const k of Object.values(lines)) for (const x of M.series[k] || []) { max = Math.max(max, x[f]); from = Math.min(from, x[0]); }
  from = Math.max(from, now - M.window);
  const span = now - from;
  max = max > 0 ? max * 1.1 : 1;
  let i = 0, paths = "", legend = "";
  for (const [label, k] of Object.entries(lines)) {
    const l = M.series[k] || [], c = "c" + (i++ % 8);
    const pts = l.map(x => ((x[0] - from) / span * W).toFixed(1) + "," + (H - x[f] / max * H).toFixed(1)).join(" ");
    const last = l.length ? fmt(l[l.length - 1][f]) : "—";
    paths += `<polyline class="${c}" data-series="${esc(k)}" data-points="${l.length}" points="${pts}"><title>${esc(label)}: ${esc(last)}</title></polyline>`;
    legend += `<li class="${c}">${esc(label)} <b>${esc(last)}</b></li>`;
  }
  return `<figure class="chart"><figcaption>${esc(title)} <span class="muted">· max ${esc(fmt(max / 1.1))} · last ${Math.max(1, Math.round(span / 60000))} min</span></figcaption>
<svg viewBox="0 0 ${W} ${H}" preserveAspectRatio="none" role="img" aria-label="${esc(title)}"><line x1="0" y1="${H}" x2="${W}" y2="${H}"/>${paths}</svg><ul class="chart-legend">${legend}</ul></figure>`;
}
function drawCharts() {
  const byKind = p => Object.keys(M.series).filter(k => k.startsWith(p)).sort();
  const nodes = {}; for (const k of byKind("node/")) nodes[k.slice(5)] = k;
  const insts = {}; for (const k of byKind("instance/")) insts[k.slice(9)] = k;
  const box = id => document.getElementById(id);
  setHTML(box("chart-node-cpu"), chart("CPU by node (cores)", nodes, 1, fmtCPU));
  setHTML(box("chart-node-mem"), chart("Memory by node", nodes, 2, fmtMem));
  setHTML(box("chart-inst-cpu"), chart("CPU of the busiest instances (cores)", insts, 1, fmtCPU));
  setHTML(box("chart-inst-mem"), chart("Memory of the largest instances", insts, 2, fmtMem));
  if (route[0] === "instance") {
    const k = "instance/" + route[1] + "/" + route[2], one = {[route[2]]: k};
    setHTML(box("chart-this-cpu"), chart("CPU (cores)", one, 1, fmtCPU));
    setHTML(box("chart-this-mem"), chart("Memory", one, 2, fmtMem));
  }
}

function build() {
  if (logStream) { logStream.close(); logStream = null; }
  stopCharts();
  route = parseRoute();
  for (const a of document.querySelectorAll("header nav a")) {
    const r = a.getAttribute("href").slice(2);
    if (r === route[0] || (r === "services" && (route[0] === "service" || route[0] === "job"))) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  built = route.join("/");
  view.innerHTML = "";
  const b = builders[route[0]] || builders.map;
  b(view);
  render();
}

function render() {
  if (!S.connected) return;
  const r = renderers[route[0]] || renderers.map;
  r(view);
  changedTiles = new Set(); layoutChanged = false;
}

function instancesOf(kind, ns, name) {
  return Object.values(S.instance).filter(i => i.spec.owner && i.spec.owner.kind === kind && i.spec.owner.name === name && i.metadata.namespace === ns);
}
function sortByName(a, b) { return key(a.metadata) < key(b.metadata) ? -1 : 1; }
function tileLabel(i) { const n = i.metadata.name, o = (i.spec.owner || {}).name || ""; return n.startsWith(o + "-") ? o + "·" + n.slice(o.length + 1, o.length + 6) : n.slice(0, 10); }

// syncTiles makes box hold one tile per instance, keyed, changing only what changed.
function syncTiles(box, list, now) {
  const have = new Map(); for (const t of box.children) have.set(t.dataset.key, t);
  for (const i of list) {
    const k = key(i.metadata);
    let t = have.get(k);
    if (!t) { t = el("a", {class: "tile", "data-key": k, href: "#/instance/" + k}); box.appendChild(t); }
    have.delete(k);
    drawTile(t, i, now);
  }
  for (const t of have.values()) t.remove();
}
function drawTile(t, i, now) {
  const st = i.status || {}, s = state(i, now), label = tileLabel(i);
  const title = i.metadata.name + ": " + (st.phase || "Pending") + (st.healthy ? ", healthy" : "") + (st.restarts ? ", " + st.restarts + " restarts" : "") + (st.reason ? " (" + st.reason + ")" : "");
  if (t.dataset.state !== s) t.dataset.state = s;
  if (t.textContent !== label) t.textContent = label;
  if (t.title !== title) { t.title = title; t.setAttribute("aria-label", title); }
}

const legend = '<div class="legend" aria-hidden="true"><span class="l-ok">running</span><span class="l-wait">starting</span><span class="l-bad">failed or restarted</span><span class="l-done">done</span></div>';

const builders = {
  map(v) { v.innerHTML = '<h1>Cluster map</h1>' + legend + '<div class="map" id="map"></div>'; },
  services(v) { v.innerHTML = '<h1>Services</h1><div id="svcs"></div><h1>Jobs</h1><div id="jobs"></div>'; },
  service(v) {
    const [, ns, name] = route;
    v.innerHTML = `<h1>Service ${esc(name)} <span class="muted">${esc(ns)}</span></h1>
<form class="actions" id="scale-form"><label for="replicas">Replicas</label><input id="replicas" type="number" min="0" max="10000" required>
<button type="submit" id="scale-btn">Scale</button><button type="button" id="restart-btn">Rolling restart</button><button type="button" id="rollback-btn">Roll back</button><button type="button" class="danger" id="remove-btn">Remove</button></form>
<div id="detail"></div><h2>Instances</h2><div class="tiles" id="tiles"></div><h2>Events</h2><div class="events" id="evs"></div>`;
    const f = v.querySelector("#scale-form"), inp = v.querySelector("#replicas");
    const s = S.service[ns + "/" + name]; if (s) inp.value = s.spec.replicas;
    f.addEventListener("submit", e => { e.preventDefault(); act({action: "scale", kind: "service", namespace: ns, name, replicas: Number(inp.value)}); });
    v.querySelector("#restart-btn").onclick = () => act({action: "restart", kind: "service", namespace: ns, name}, "Restart every instance of " + name + ", one by one?");
    v.querySelector("#rollback-btn").onclick = () => act({action: "rollback", kind: "service", namespace: ns, name}, "Put " + name + "'s previous template back?");
    v.querySelector("#remove-btn").onclick = async () => { if (await act({action: "remove", kind: "service", namespace: ns, name}, "Remove service " + name + " and all its instances?")) location.hash = "#/services"; };
  },
  job(v) {
    const [, ns, name] = route;
    v.innerHTML = `<h1>Job ${esc(name)} <span class="muted">${esc(ns)}</span></h1><div class="actions"><button type="button" class="danger" id="remove-btn">Remove</button></div>
<div id="detail"></div><h2>Instances</h2><div class="tiles" id="tiles"></div><h2>Events</h2><div class="events" id="evs"></div>`;
    v.querySelector("#remove-btn").onclick = async () => { if (await act({action: "remove", kind: "job", namespace: ns, name}, "Remove job " + name + "?")) location.hash = "#/services"; };
  },
  instance(v) {
    const [, ns, name] = route;
    v.innerHTML = `<h1>Instance ${esc(name)} <span class="muted">${esc(ns)}</span></h1><div class="actions"><button type="button" id="restart-btn">Restart</button></div><div id="detail"></div>
<h2>Logs</h2><div class="actions"><label><input type="checkbox" id="log-follow" checked> Follow</label><span id="log-state" class="muted" role="status"></span></div>
<pre id="log" tabindex="0" aria-label="log of ${esc(name)}"></pre><h2>Metrics</h2><div class="charts"><div id="chart-this-cpu"></div><div id="chart-this-mem"></div></div>
<h2>Events</h2><div class="events" id="evs"></div>`;
    v.querySelector("#restart-btn").onclick = () => act({action: "restart", kind: "instance", namespace: ns, name}, "Restart " + name + "?");
    openLog(v, ns, name);
    startCharts("top=0&instance=" + encodeURIComponent(ns + "/" + name));
  },
  nodes(v) {
    v.innerHTML = '<h1>Nodes</h1><div id="nodes"></div>';
    v.addEventListener("click", e => {
      const b = e.target.closest("button[data-act]"); if (!b) return;
      const a = b.dataset.act, n = b.dataset.node;
      act({action: a, kind: "node", name: n}, a === "drain" ? "Drain " + n + "? Its instances move elsewhere." : null);
    });
  },
  metrics(v) {
    v.innerHTML = `<h1>Metrics</h1><p class="muted">From the nodes' agents, every few seconds while this page is open.</p>
<h2>Nodes</h2><div class="charts"><div id="chart-node-cpu"></div><div id="chart-node-mem"></div></div>
<h2>Instances</h2><div class="charts"><div id="chart-inst-cpu"></div><div id="chart-inst-mem"></div></div>`;
    startCharts("top=8");
  },
  events(v) {
    v.innerHTML = `<h1>Events</h1><div class="actions"><label for="ev-filter">Filter</label><input id="ev-filter" type="search" placeholder="text in object, reason or message">
<label for="ev-type">Type</label><select id="ev-type"><option value="">all</option><option>Normal</option><option>Warning</option></select></div><div class="events" id="evs"></div>`;
    v.querySelector("#ev-filter").addEventListener("input", render);
    v.querySelector("#ev-type").addEventListener("change", render);
  },
};

function eventList(filter, limit) {
  const out = [];
  for (let i = S.events.length - 1; i >= 0 && out.length < limit; i--) { const e = S.events[i]; if (filter(e)) out.push(e); }
  return "<ul>" + out.map(e => `<li class="${esc(e.type)}"><span class="muted">${esc(new Date(e.time).toLocaleTimeString())}</span> ${esc(e.type)} <b>${esc(e.object.kind)} ${esc(e.object.name)}</b> ${esc(e.reason)}: ${esc(e.message)}</li>`).join("") + "</ul>";
}
function setHTML(node, html) { if (node && node._html !== html) { node._html = html; node.innerHTML = html; } }

const renderers = {
  map(v) {
    const map = v.querySelector("#map"), now = Date.now();
    // Only statuses changed: redraw those tiles, not the thousand others.
    if (!layoutChanged && map.children.length) {
      for (const k of changedTiles) {
        const t = map.querySelector(`.tile[data-key="${CSS.escape(k)}"]`), i = S.instance[k];
        if (t && i) drawTile(t, i, now); else { changedTiles.clear(); layoutChanged = true; break; }
      }
      if (!layoutChanged) return;
    }
    const nodes = Object.values(S.node).sort(sortByName);
    const byNode = {}; for (const i of Object.values(S.instance)) (byNode[i.spec.node || ""] ||= []).push(i);
    const maxCPU = Math.max(1, ...nodes.map(n => (n.spec.capacity || {}).milliCPU || 0));
    const have = new Map(); for (const b of map.children) have.set(b.dataset.node, b);
    const boxes = nodes.map(n => ({name: n.metadata.name, n}));
    if ((byNode[""] || []).length) boxes.push({name: "", n: null});
    for (const {name, n} of boxes) {
      let b = have.get(name);
      if (!b) { b = el("section", {class: "node", "data-node": name}); b.innerHTML = '<h2></h2><div class="meta"></div><div class="cores"></div><div class="tiles"></div>'; map.appendChild(b); }
      have.delete(name);
      const list = (byNode[name] || []).sort(sortByName);
      if (n) {
        const cap = n.spec.capacity || {}, cond = (n.status || {}).condition || "Unknown";
        b.className = "node" + (cond !== "Ready" ? " notready" : "") + (n.spec.unschedulable ? " cordoned" : "");
        b.style.width = Math.round(180 + 420 * (cap.milliCPU || 0) / maxCPU) + "px";
        b.setAttribute("aria-label", "node " + name);
        setHTML(b.children[0], esc(name));
        setHTML(b.children[1], `${esc(cond)}${n.spec.unschedulable ? " · cordoned" : ""}${n.spec.draining ? " · draining" : ""} · ${((cap.milliCPU || 0) / 1000).toFixed(1)} CPU · ${fmtMem(mem(cap.memory))} · ${list.length} instances`);
        const pinned = new Set(); for (const i of list) for (const c of i.spec.cpuset || []) pinned.add(c);
        const cores = ((n.spec.topology || {}).cores || []);
        setHTML(b.children[2], cores.map(c => `<span class="core${c.threads.some(t => pinned.has(t)) ? " pinned" : ""}" title="core ${c.id}: CPUs ${c.threads.join(",")}${c.threads.some(t => pinned.has(t)) ? " pinned" : ""}"></span>`).join(""));
      } else {
        setHTML(b.children[0], "not placed"); setHTML(b.children[1], list.length + " pending");
      }
      syncTiles(b.children[3], list, now);
    }
    for (const b of have.values()) b.remove();
  },
  services(v) {
    const svcs = Object.values(S.service).sort(sortByName);
    setHTML(v.querySelector("#svcs"), svcs.length ? `<table><thead><tr><th>Name</th><th>Ready / updated / wanted</th><th>VIP</th><th>DNS name</th><th>Ports</th><th>Image</th></tr></thead><tbody>` +
      svcs.map(s => { const st = s.status || {}, m = s.metadata, ports = (s.spec.template.ports || []).map(p => (p.host ? p.host + "→" : "") + p.container + "/" + (p.protocol || "tcp")).join(", ");
        return `<tr data-service="${esc(key(m))}"><td><a href="#/service/${esc(m.namespace)}/${esc(m.name)}">${esc(m.name)}</a> <span class="muted">${esc(m.namespace)}</span></td><td class="counts">${st.readyReplicas || 0} / ${st.updatedReplicas || 0} / ${s.spec.replicas}</td><td>${esc(st.vip || "—")}</td><td>${esc(m.name + "." + m.namespace + ".berth")}</td><td>${esc(ports || "—")}</td><td>${esc(s.spec.template.image)}</td></tr>`; }).join("") + "</tbody></table>" : '<p class="muted">No services.</p>');
    const jobs = Object.values(S.job).sort(sortByName);
    setHTML(v.querySelector("#jobs"), jobs.length ? `<table><thead><tr><th>Name</th><th>Phase</th><th>Succeeded / failed / active of completions</th><th>Indexes</th></tr></thead><tbody>` +
      jobs.map(j => { const st = j.status || {}, m = j.metadata;
        return `<tr><td><a href="#/job/${esc(m.namespace)}/${esc(m.name)}">${esc(m.name)}</a> <span class="muted">${esc(m.namespace)}</span></td><td>${esc(st.phase || "Pending")}</td><td>${st.succeeded || 0} / ${st.failed || 0} / ${st.active || 0} of ${j.spec.completions}</td><td>${indexGrid(j)}</td></tr>`; }).join("") + "</tbody></table>" : '<p class="muted">No jobs.</p>');
  },
  service(v) {
    const [, ns, name] = route, s = S.service[ns + "/" + name];
    if (!s) { setHTML(v.querySelector("#detail"), '<p class="muted">No such service (yet).</p>'); return; }
    const st = s.status || {}, t = s.spec.template, inp = v.querySelector("#replicas"), ro = st.rollout || {};
    if (inp && inp.value === "") inp.value = s.spec.replicas;
    setHTML(v.querySelector("#detail"), `<dl><dt>Replicas</dt><dd id="svc-counts">${st.readyReplicas || 0} ready / ${st.updatedReplicas || 0} updated / ${s.spec.replicas} wanted</dd>
<dt>VIP</dt><dd>${esc(st.vip || "—")}</dd><dt>DNS name</dt><dd>${esc(name + "." + ns + ".berth")}</dd><dt>Image</dt><dd>${esc(t.image)}</dd>
<dt>Ports</dt><dd>${esc((t.ports || []).map(p => (p.name ? p.name + " " : "") + (p.host ? p.host + "→" : "") + p.container).join(", ") || "—")}</dd>
<dt>Rollout</dt><dd id="svc-rollout">${ro.revision ? "revision " + ro.revision + " · " : ""}${esc(ro.phase || "—")} · ${st.updatedReplicas || 0} of ${s.spec.replicas} on the current template${ro.message ? " · " + esc(ro.message) : ""}${st.message ? " · " + esc(st.message) : ""}</dd>
<dt>History</dt><dd>${(st.history || []).slice().reverse().map(h => `revision ${h.revision}: ${esc(h.template.image)}${h.createdAt ? " · " + esc(age(h.createdAt)) + " ago" : ""}${h.hash === ro.hash ? " (current)" : ""}`).join("<br>") || "—"}</dd></dl>`);
    syncTiles(v.querySelector("#tiles"), instancesOf("Service", ns, name).sort(sortByName), Date.now());
    setHTML(v.querySelector("#evs"), eventList(e => e.object.namespace === ns && (e.object.name === name || e.object.name.startsWith(name + "-")), 50));
  },
  job(v) {
    const [, ns, name] = route, j = S.job[ns + "/" + name];
    if (!j) { setHTML(v.querySelector("#detail"), '<p class="muted">No such job (yet).</p>'); return; }
    const st = j.status || {};
    setHTML(v.querySelector("#detail"), `<dl><dt>Phase</dt><dd>${esc(st.phase || "Pending")}</dd><dt>Completions</dt><dd>${st.succeeded || 0} succeeded, ${st.failed || 0} failed, ${st.active || 0} running of ${j.spec.completions}</dd><dt>Indexes</dt><dd>${indexGrid(j)}</dd>${st.message ? "<dt>Message</dt><dd>" + esc(st.message) + "</dd>" : ""}</dl>`);
    syncTiles(v.querySelector("#tiles"), instancesOf("Job", ns, name).sort(sortByName), Date.now());
    setHTML(v.querySelector("#evs"), eventList(e => e.object.namespace === ns && (e.object.name === name || e.object.name.startsWith(name + "-")), 50));
  },
  instance(v) {
    const [, ns, name] = route, i = S.instance[ns + "/" + name];
    if (!i) { setHTML(v.querySelector("#detail"), '<p class="muted">No such instance (it may have been removed).</p>'); return; }
    const st = i.status || {}, o = i.spec.owner || {};
    setHTML(v.querySelector("#detail"), `<dl><dt>Owner</dt><dd><a href="#/${o.kind === "Job" ? "job" : "service"}/${esc(ns)}/${esc(o.name)}">${esc(o.kind)} ${esc(o.name)}</a></dd>
<dt>Phase</dt><dd id="inst-phase">${esc(st.phase || "Pending")}${st.healthy ? " · healthy" : ""}</dd><dt>Node</dt><dd>${esc(i.spec.node || "—")}</dd><dt>IP</dt><dd>${esc(st.ip || "—")}</dd>
<dt>Restarts</dt><dd>${st.restarts || 0}</dd><dt>Reason</dt><dd>${esc(st.reason || "—")} ${esc(st.message || "")}</dd><dt>Exit code</dt><dd>${st.exitCode ?? "—"}</dd>
<dt>Started</dt><dd>${st.startedAt ? esc(age(st.startedAt)) + " ago" : "—"}</dd><dt>Pinned CPUs</dt><dd>${esc((i.spec.cpuset || []).join(",") || "—")}</dd><dt>Image</dt><dd>${esc(i.spec.template.image)}</dd></dl>`);
    setHTML(v.querySelector("#evs"), eventList(e => e.object.namespace === ns && e.object.name === name, 50));
  },
  nodes(v) {
    const nodes = Object.values(S.node).sort(sortByName);
    const use = {}; for (const i of Object.values(S.instance)) { if (!i.spec.node || ["Succeeded", "Failed"].includes((i.status || {}).phase)) continue; const u = (use[i.spec.node] ||= {cpu: 0, mem: 0, n: 0}); const r = i.spec.template.resources || {}; u.cpu += r.cpu || 0; u.mem += mem(r.memory); u.n++; }
    setHTML(v.querySelector("#nodes"), `<table><thead><tr><th>Name</th><th>Condition</th><th>Heartbeat</th><th>Capacity</th><th>In use</th><th>Scheduling</th><th>Actions</th></tr></thead><tbody>` +
      nodes.map(n => { const m = n.metadata.name, cap = n.spec.capacity || {}, u = use[m] || {cpu: 0, mem: 0, n: 0}, st = n.status || {};
        return `<tr data-node="${esc(m)}"><td>${esc(m)}</td><td>${esc(st.condition || "Unknown")}${st.message ? " · " + esc(st.message) : ""}</td><td>${esc(age(st.lastHeartbeat))} ago</td>
<td>${((cap.milliCPU || 0) / 1000).toFixed(1)} CPU, ${fmtMem(mem(cap.memory))}</td><td>${u.cpu.toFixed(1)} CPU, ${fmtMem(u.mem)}, ${u.n} instances</td>
<td class="sched">${n.spec.draining ? "draining" : n.spec.unschedulable ? "cordoned" : "schedulable"}</td>
<td><button type="button" data-act="cordon" data-node="${esc(m)}">Cordon</button> <button type="button" data-act="uncordon" data-node="${esc(m)}">Uncordon</button> <button type="button" class="danger" data-act="drain" data-node="${esc(m)}">Drain</button></td></tr>`; }).join("") + "</tbody></table>");
  },
  metrics() { /* drawn as samples arrive (drawCharts) */ },
  events(v) {
    const f = v.querySelector("#ev-filter").value.toLowerCase(), ty = v.querySelector("#ev-type").value;
    setHTML(v.querySelector("#evs"), eventList(e => (!ty || e.type === ty) && (!f || (e.object.kind + " " + e.object.name + " " + e.reason + " " + e.message).toLowerCase().includes(f)), 300));
  },
};

function indexGrid(j) {
  const by = {}; for (const r of (j.status || {}).indexes || []) by[r.index] = r;
  const active = new Set(); for (const i of instancesOf("Job", j.metadata.namespace, j.metadata.name)) if (["Running", "Starting", "Scheduled", "Pending"].includes((i.status || {}).phase)) active.add(i.spec.index || 0);
  let h = '<div class="grid" role="img" aria-label="index results">';
  for (let n = 0; n < Math.min(j.spec.completions, 2000); n++) { const r = by[n] || {}; const c = r.succeeded ? "ok" : r.failed ? "bad" : active.has(n) ? "run" : ""; h += `<span class="cell ${c}" title="index ${n}${r.succeeded ? " succeeded" : r.failed ? " failed" : active.has(n) ? " running" : ""}${r.attempts ? ", " + r.attempts + " attempts" : ""}"></span>`; }
  return h + "</div>";
}

// Restart flashes and heartbeat ages move with the clock, not only with changes.
setInterval(() => { if (Object.keys(restartedAt).length || route[0] === "nodes") { const now = Date.now(); for (const k in restartedAt) { changedTiles.add(k); if (now - restartedAt[k] > FLASH_MS + 1000) delete restartedAt[k]; } render(); } }, 1000);

document.getElementById("logout").onclick = async () => { await fetch("/ui/logout", {method: "POST", headers: {"X-CSRF-Token": csrf}}); location.reload(); };
build();
connect();
