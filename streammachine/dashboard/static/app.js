// The StreamMachine dashboard page: live figures from one SSE stream (/api/events), details on demand.
"use strict";
const WINDOW = 120; // points kept per chart series (two minutes at one frame per second)
const series = { rate: {}, lag: {}, times: [] };
let selectedInstance = null;
let selectedStream = null;

const $ = (sel) => document.querySelector(sel);
const esc = (v) => String(v ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
const num = (v) => (v === null || v === undefined ? "–" : typeof v === "number" ? v.toLocaleString() : esc(v));
const ago = (s) => (s === null || s === undefined ? "–" : s < 60 ? `${s.toFixed(1)} s` : s < 3600 ? `${(s / 60).toFixed(1)} min` : `${(s / 3600).toFixed(1)} h`);

async function api(path) {
  const response = await fetch(path, { credentials: "same-origin" });
  if (response.status === 401) { showLogin(); throw new Error("unauthorized"); }
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function showLogin() {
  $("#login").hidden = false;
  $("#login-go").onclick = async () => {
    // the server sets the cookie HttpOnly: no script here can read the token back
    const response = await fetch("/api/session", { method: "POST", headers: { Authorization: `Bearer ${$("#token").value}` } });
    if (response.ok) location.reload();
    else $("#login-error").textContent = (await response.json()).error || response.statusText;
  };
}

function rows(tbody, items, render) {
  $(tbody).innerHTML = items.map(render).join("") || `<tr><td colspan="20">none</td></tr>`;
}

// --- live charts ------------------------------------------------------------------
function push(store, key, value, length) {
  const values = (store[key] ||= new Array(length).fill(null));
  values.push(value);
  if (values.length > WINDOW) values.shift();
}

function lineChart(id, title, store) {
  // copies: Plotly.react redraws only data it sees change, and these arrays are updated in place
  const traces = Object.entries(store).map(([name, y]) => ({ x: series.times.slice(), y: y.slice(), name, mode: "lines", type: "scatter" }));
  Plotly.react(id, traces, layout(title, { datarevision: Date.now() }), { displayModeBar: false, responsive: true });
}

function layout(title, extra = {}) {
  return { title: { text: title, font: { size: 13 } }, margin: { l: 50, r: 10, t: 30, b: 40 }, showlegend: true,
           legend: { orientation: "h", y: -0.25 }, ...extra };
}

function onLive(frame) {
  if (frame.error) { $("#link").className = "badge down"; $("#link").textContent = frame.error; return; }
  $("#link").className = "badge live";
  $("#link").textContent = "live";
  series.times.push(new Date(frame.time * 1000));
  if (series.times.length > WINDOW) series.times.shift();
  const seen = new Set();
  for (const g of frame.groups) {
    const key = `${g.stream} / ${g.group}`;
    seen.add(key);
    push(series.rate, key, g.rate, series.times.length - 1);
    push(series.lag, key, g.lag, series.times.length - 1);
  }
  for (const store of [series.rate, series.lag]) {
    for (const key of Object.keys(store)) {
      if (!seen.has(key)) push(store, key, null, 0);
      while (store[key].length < series.times.length) store[key].unshift(null);
      while (store[key].length > series.times.length) store[key].shift();
    }
  }
  if (window.Plotly) {
    lineChart("chart-rate", "Throughput per group (entries/s)", series.rate);
    lineChart("chart-lag", "Lag per group (entries not yet delivered)", series.lag);
    const consumers = frame.consumers;
    Plotly.react("chart-pending", [{ type: "bar", x: consumers.map((c) => c.consumer), y: consumers.map((c) => c.pending),
      hovertext: consumers.map((c) => `${c.stream} / ${c.group}`) }],
      layout("Pending per consumer", { showlegend: false, datarevision: Date.now(), margin: { l: 50, r: 10, t: 30, b: 90 } }),
      { displayModeBar: false, responsive: true });
    const errors = frame.errors;
    const labels = errors.map((e) => `${e.agent.split(".").pop()} @ ${e.instance.split("@")[0]}:${e.instance.split(":").pop()}`);
    Plotly.react("chart-errors", [
      { type: "bar", name: "failed", x: labels, y: errors.map((e) => e.failed) },
      { type: "bar", name: "dead-lettered", x: labels, y: errors.map((e) => e.dead_lettered) },
    ], layout("Errors per agent", { barmode: "group", datarevision: Date.now(), margin: { l: 50, r: 10, t: 30, b: 90 },
              legend: { orientation: "h", y: 1.12 } }), { displayModeBar: false, responsive: true });
  }
  renderInstances(frame.instances);
}

function renderInstances(instances) {
  $("#instance-count").textContent = `(${instances.length})`;
  rows("#instances tbody", instances, (i) => `<tr data-id="${esc(i.id)}">
    <td>${esc(i.id)}</td><td>${esc(i.name)}</td><td>${esc(i.host)}</td><td class="num">${i.pid}</td>
    <td>${i.worker ?? "–"}</td><td>${esc(i.state)}</td><td class="num">${i.agents}</td><td class="num">${i.timers}</td>
    <td class="num rate">${num(i.totals.rate)}</td><td class="num processed">${num(i.totals.processed)}</td>
    <td class="num">${num(i.totals.failed)}</td><td class="num">${num(i.totals.dead_lettered)}</td>
    <td>${ago(i.heartbeat_age)} ago</td><td>${ago(i.uptime)}</td></tr>`);
  if (selectedInstance) showInstance(selectedInstance, false);
}

async function showInstance(id, scroll = true) {
  selectedInstance = id;
  let record;
  try { record = await api(`/api/instance/${encodeURIComponent(id)}`); }
  catch (error) { $("#detail-id").textContent = `${id}: ${error.message}`; return; }
  $("#instance-detail").hidden = false;
  $("#detail-id").textContent = `${record.id} (${record.version}, since ${new Date(record.started * 1000).toLocaleString()})`;
  rows("#detail-agents tbody", record.agents, (a) => `<tr><td>${esc(a.name)}</td><td>${esc(a.stream)}</td><td>${esc(a.group)}</td>
    <td class="num">${a.concurrency}${a.processes ? ` × ${a.processes} proc` : ""}</td><td>${a.running ? "yes" : "no"}</td>
    <td class="num">${num(a.rate)}</td><td class="num">${num(a.processed)}</td><td class="num">${num(a.failed)}</td>
    <td class="num">${num(a.dead_lettered)}</td><td class="num">${num(a.handler_ms)}</td><td class="num">${num(a.pending)}</td>
    <td class="num">${num(a.lag)}</td><td class="error">${esc(a.last_error)}</td></tr>`);
  rows("#detail-timers tbody", record.timers, (t) => `<tr><td>${esc(t.name)}</td><td class="num">${t.interval}</td>
    <td>${t.running ? "yes" : "no"}</td><td class="num">${num(t.runs)}</td><td class="num">${num(t.failures)}</td>
    <td class="error">${esc(t.last_error)}</td></tr>`);
  if (scroll) $("#instance-detail").scrollIntoView({ behavior: "smooth" });
}

// --- streams, groups, entries -----------------------------------------------------
async function loadStreams() {
  const streams = await api("/api/streams");
  rows("#streams tbody", streams, (s) => {
    const pending = s.groups.reduce((n, g) => n + (g.pending || 0), 0);
    const lag = s.groups.reduce((n, g) => n + (g.lag || 0), 0);
    return `<tr data-stream="${esc(s.stream)}"><td>${esc(s.stream)}</td><td class="num">${num(s.length)}</td>
      <td>${esc(s.first_id)}</td><td>${esc(s.last_id)}</td><td>${s.groups.map((g) => esc(g.name)).join(", ")}</td>
      <td class="num">${num(pending)}</td><td class="num">${num(lag)}</td></tr>`;
  });
}

async function showStream(name) {
  selectedStream = name;
  $("#stream-detail").hidden = false;
  $("#stream-name").textContent = name;
  const path = `/api/streams/${encodeURIComponent(name)}`;
  const groups = await api(`${path}/groups`);
  const lines = [];
  for (const g of groups) {
    const consumers = g.consumers_list.length ? g.consumers_list : [{ name: "–", pending: null, idle: null }];
    for (const c of consumers) lines.push({ g, c });
  }
  rows("#groups tbody", lines, ({ g, c }) => `<tr><td>${esc(g.name)}</td><td>${esc(c.name)}</td>
    <td class="num">${num(c.pending)}</td><td class="num">${num(c.idle)}</td><td class="num">${num(g.lag)}</td>
    <td>${esc(g["last-delivered-id"])}</td></tr>`);
  const params = new URLSearchParams({ count: $("#range-count").value || "50" });
  if ($("#range-start").value) params.set("start", $("#range-start").value);
  if ($("#range-end").value) params.set("end", $("#range-end").value);
  const page = await api(`${path}/entries?${params}`);
  rows("#entries tbody", page.entries, (e) => `<tr><td>${esc(e.id)}</td><td class="fields">${
    Object.entries(e.fields).map(([k, v]) => `<b>${esc(k)}</b>=${esc(v)}`).join(" ")}</td></tr>`);
}

// --- storage and tables -----------------------------------------------------------
async function loadStorage() {
  const data = await api("/api/storage");
  rows("#storage tbody", Object.entries(data.storage.items), ([k, v]) => `<tr><td>${esc(k)}</td><td class="fields">${esc(v)}</td></tr>`);
  $("#tables").innerHTML = data.tables.map((t) => `<h3>${esc(t.name)} <small>(${t.size} keys)</small></h3>
    <table><thead><tr><th>key</th><th>value</th></tr></thead><tbody>${Object.entries(t.items).map(([k, v]) =>
      `<tr><td>${esc(k)}</td><td class="fields">${esc(v)}</td></tr>`).join("") || "<tr><td colspan=2>empty</td></tr>"}</tbody></table>`).join("")
    || "<p>no tables</p>";
}

// --- dead letters: list, replay, purge (writes send the token as a bearer header, after a confirmation) ---------
let selectedDead = null;

async function loadDeadLetterStreams() {
  const streams = await api("/api/deadletters");
  rows("#dlq-streams tbody", streams, (d) => `<tr data-stream="${esc(d.dead_letter_stream)}"><td>${esc(d.dead_letter_stream)}</td>
    <td>${esc(d.stream)}</td><td class="num">${num(d.count)}</td></tr>`);
}

async function showDeadLetters(name) {
  selectedDead = name;
  $("#dlq-detail").hidden = false;
  $("#dlq-name").textContent = name;
  const page = await api(`/api/deadletters/${encodeURIComponent(name)}?count=200`);
  rows("#dlq-entries tbody", page.dead_letters, (d) => `<tr><td><input type="checkbox" value="${esc(d.id)}"></td>
    <td>${esc(d.id)}</td><td>${esc(d.agent)}</td><td class="error">${esc(d.error)}</td><td class="num">${num(d.deliveries)}</td>
    <td>${esc(d.original_id)}</td><td class="fields">${Object.entries(d.fields).map(([k, v]) => `<b>${esc(k)}</b>=${esc(v)}`).join(" ")}</td></tr>`);
}

async function deadLetterAction(action, all) {
  const ids = all ? null : Array.from(document.querySelectorAll("#dlq-entries input:checked")).map((box) => box.value);
  if (ids && !ids.length) { $("#dlq-result").textContent = "select dead letters first"; return; }
  const what = ids ? `${ids.length} dead letter(s)` : "every dead letter";
  if (!confirm(`${action} ${what} of ${selectedDead}?`)) return;
  let token = sessionStorage.getItem("streammachine-token");
  if (!token) { token = prompt("Write actions need the dashboard's token (STREAMMACHINE_DASHBOARD_TOKEN):"); if (!token) return; }
  const response = await fetch(`/api/deadletters/${encodeURIComponent(selectedDead)}/${action}`, {
    method: "POST", headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}` },
    body: JSON.stringify({ ids, confirm: true }),
  });
  const body = await response.json();
  if (response.ok) sessionStorage.setItem("streammachine-token", token);
  else if (response.status === 401) sessionStorage.removeItem("streammachine-token");
  $("#dlq-result").textContent = response.ok
    ? (action === "replay" ? `replayed ${body.replayed.length}` : `purged ${body.purged}`) : body.error;
  await showDeadLetters(selectedDead);
  await loadDeadLetterStreams();
}

// --- wiring -----------------------------------------------------------------------
function showTab(name) {
  document.querySelectorAll("nav button").forEach((b) => b.classList.toggle("active", b.dataset.tab === name));
  document.querySelectorAll(".tab").forEach((t) => { t.hidden = t.id !== `tab-${name}`; });
  if (name === "streams") loadStreams().catch(console.warn);
  if (name === "storage") loadStorage().catch(console.warn);
  if (name === "deadletters") loadDeadLetterStreams().catch(console.warn);
}

document.querySelectorAll("nav button").forEach((b) => { b.onclick = () => showTab(b.dataset.tab); });
$("#instances tbody").onclick = (event) => { const row = event.target.closest("tr[data-id]"); if (row) showInstance(row.dataset.id); };
$("#detail-close").onclick = () => { selectedInstance = null; $("#instance-detail").hidden = true; };
$("#streams tbody").onclick = (event) => { const row = event.target.closest("tr[data-stream]"); if (row) showStream(row.dataset.stream).catch(console.warn); };
$("#dlq-streams tbody").onclick = (event) => { const row = event.target.closest("tr[data-stream]"); if (row) showDeadLetters(row.dataset.stream).catch(console.warn); };
$("#dlq-replay-selected").onclick = () => deadLetterAction("replay", false).catch(console.warn);
$("#dlq-replay-all").onclick = () => deadLetterAction("replay", true).catch(console.warn);
$("#dlq-purge-selected").onclick = () => deadLetterAction("purge", false).catch(console.warn);
$("#range").onsubmit = (event) => { event.preventDefault(); if (selectedStream) showStream(selectedStream).catch(console.warn); };

api("/api/health").then((health) => { $("#server").textContent = health.server; }).catch(console.warn);
const events = new EventSource("/api/events");
events.addEventListener("live", (event) => onLive(JSON.parse(event.data)));
events.onerror = () => { $("#link").className = "badge down"; $("#link").textContent = "reconnecting…"; };
