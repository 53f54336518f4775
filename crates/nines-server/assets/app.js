// The nines dashboard: polls /v1/dashboard every second, /v1/services every
// two seconds and /v1/availability every three, and draws them with
// textContent only (names and service data never become markup).
"use strict";

const POLL_MS = 1000;
const SERVICES_EVERY = 2;
// Longer than a member takes to ask its peers (600 ms each, in parallel).
const FETCH_TIMEOUT_MS = 2500;

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return (i === 0 ? v : v.toFixed(1)) + " " + units[i];
}

function dash(v) { return v === null || v === undefined ? "–" : v; }

async function getJson(path) {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), FETCH_TIMEOUT_MS);
  try {
    const r = await fetch(path, { signal: ctl.signal, cache: "no-store" });
    const body = r.status === 204 ? null : await r.json().catch(() => null);
    return { status: r.status, body };
  } finally {
    clearTimeout(timer);
  }
}

function setPill(id, text, state) {
  const p = document.getElementById(id);
  p.textContent = text;
  p.classList.toggle("ok", state === true);
  p.classList.toggle("bad", state === false);
}

function drawCluster(v) {
  setPill("leader", "Leader: " + (v.leader || "none"), v.leader ? true : false);
  setPill("term", "Term: " + v.term);
  setPill("quorum", "Quorum: " + v.voters_healthy + "/" + v.voters + (v.quorum ? " ok" : " lost"), v.quorum);
  document.getElementById("served-by").textContent = "served by " + v.member;
  document.getElementById("cluster-id").textContent = v.cluster_id;
  document.getElementById("revision").textContent = v.revision;
  const tbody = document.querySelector("#members tbody");
  const rows = v.members.map((m) => {
    const tr = el("tr", null, "role-" + m.role);
    tr.dataset.name = m.name;
    tr.appendChild(el("td", m.name, "member-name"));
    tr.appendChild(el("td", m.role + (m.is_learner && m.role !== "learner" ? " (learner)" : ""), "role"));
    tr.appendChild(el("td", m.healthy ? "healthy" : (m.error || "no leader"), m.healthy ? "health-ok" : "health-bad"));
    tr.appendChild(el("td", dash(m.term), "num"));
    tr.appendChild(el("td", dash(m.raft_index), "num"));
    tr.appendChild(el("td", dash(m.applied_index), "num"));
    tr.appendChild(el("td", dash(m.index_lag), "num"));
    tr.appendChild(el("td", dash(m.revision), "num"));
    tr.appendChild(el("td", bytes(m.db_size_bytes), "num"));
    tr.appendChild(el("td", dash(m.client_url), "muted"));
    return tr;
  });
  tbody.replaceChildren(...rows);
}

// The registry's list: `{"services": [{"name", "instances", "passing"}]}`.
// Each service's instances come from /v1/services/NAME/instances. The page
// remembers the status changes it has seen, as a short recent history.
const SERVICES_SHOWN_MAX = 20;
const HISTORY_MAX = 12;
const lastStatus = new Map();
const history = [];

function serviceEntries(body) {
  if (Array.isArray(body)) return body;
  if (body && Array.isArray(body.services)) return body.services;
  return [];
}

function noteStatus(service, inst) {
  const key = service + "/" + inst.id;
  const before = lastStatus.get(key);
  if (before !== undefined && before !== inst.status) {
    history.unshift(new Date().toLocaleTimeString() + "  " + key + ": " + before + " → " + inst.status);
    history.length = Math.min(history.length, HISTORY_MAX);
  }
  lastStatus.set(key, inst.status);
}

function drawInstance(service, inst) {
  noteStatus(service, inst);
  const li = el("li", null, "instance");
  li.dataset.id = inst.id;
  li.appendChild(el("span", inst.status, inst.status === "passing" ? "health-ok" : "health-bad"));
  li.appendChild(el("span", " " + inst.id + "  " + inst.address + ":" + inst.port + "  (" + inst.check + ")"));
  if (inst.since_ms) {
    li.appendChild(el("span", "  since " + new Date(inst.since_ms).toLocaleTimeString(), "muted"));
  }
  return li;
}

async function drawServices(res) {
  const box = document.getElementById("services");
  const note = (text) => {
    box.replaceChildren(el("span", text));
    box.className = "muted";
  };
  if (res.status === 404) return note("no registry on this member");
  if (res.status !== 200) return note(res.status ? "registry answered " + res.status : "registry not reachable");
  const list = serviceEntries(res.body).slice(0, SERVICES_SHOWN_MAX);
  if (list.length === 0) return note("no services registered");
  const answers = await Promise.all(list.map((s) =>
    getJson("/v1/services/" + encodeURIComponent(s.name) + "/instances").catch(() => ({ status: 0, body: null }))));
  const ul = el("ul", null, "services");
  list.forEach((s, i) => {
    const li = el("li", null, "service");
    li.dataset.name = s.name;
    const ok = typeof s.passing === "number" && s.passing > 0;
    const head = el("div", null, "service-head");
    head.appendChild(el("strong", s.name, "service-name"));
    head.appendChild(el("span", "  " + dash(s.passing) + "/" + dash(s.instances) + " passing", ok ? "health-ok" : "health-bad"));
    li.appendChild(head);
    const insts = answers[i].body && Array.isArray(answers[i].body.instances) ? answers[i].body.instances : [];
    if (insts.length) {
      const sub = el("ul", null, "instances");
      for (const inst of insts) sub.appendChild(drawInstance(s.name, inst));
      li.appendChild(sub);
    }
    ul.appendChild(li);
  });
  box.className = "";
  const parts = [ul];
  if (history.length) {
    parts.push(el("h3", "Recent changes"));
    const h = el("ul", null, "history");
    for (const line of history) h.appendChild(el("li", line));
    parts.push(h);
  }
  box.replaceChildren(...parts);
}

// Availability per service from /v1/availability: 1 h, 24 h and 30 d
// figures, the error budget left, and the last hour as a timeline bar with
// each incident drawn where it happened.
const AVAILABILITY_EVERY = 3;
const TIMELINE_MS = 3600 * 1000;

function pct(v) { return v === null || v === undefined ? "–" : v.toFixed(v >= 99.99 ? 4 : 2) + "%"; }
function num(v, d) { return v === null || v === undefined ? "–" : v.toFixed(d); }

function timeline(r) {
  const bar = el("div", null, "timeline");
  bar.title = "last hour";
  const from = r.now_ms - TIMELINE_MS;
  const tracked = Math.max(r.tracked_since_ms, from);
  const untracked = el("div", null, "seg untracked");
  untracked.style.left = "0%";
  untracked.style.width = ((tracked - from) / TIMELINE_MS * 100) + "%";
  bar.appendChild(untracked);
  for (const inc of r.incidents) {
    const end = inc.end_ms === null || inc.end_ms === undefined ? r.now_ms : inc.end_ms;
    if (end < from) continue;
    const start = Math.max(inc.start_ms, from);
    const seg = el("div", null, "seg down");
    seg.style.left = ((start - from) / TIMELINE_MS * 100) + "%";
    seg.style.width = Math.max(0.3, (end - start) / TIMELINE_MS * 100) + "%";
    seg.title = "down " + new Date(inc.start_ms).toLocaleTimeString() + " for " + (inc.duration_ms / 1000).toFixed(1) + " s";
    bar.appendChild(seg);
  }
  return bar;
}

function drawAvailability(res) {
  const box = document.getElementById("availability");
  if (res.status === 404) { box.className = "muted"; box.replaceChildren(el("span", "no availability accounting on this member")); return; }
  if (res.status !== 200 || !res.body) { box.className = "muted"; box.replaceChildren(el("span", "availability not reachable")); return; }
  const services = res.body.services || [];
  if (!services.length) { box.className = "muted"; box.replaceChildren(el("span", "no service accounted yet")); return; }
  const table = el("table", null, "availability");
  const head = el("tr");
  for (const h of ["Service", "Now", "1 h", "24 h", "30 d", "Nines (30 d)", "Budget left (30 d)", "Incidents", "Last hour"]) head.appendChild(el("th", h));
  const thead = el("thead"); thead.appendChild(head); table.appendChild(thead);
  const tbody = el("tbody");
  for (const r of services) {
    const w = (name) => r.windows.find((x) => x.window === name) || {};
    const tr = el("tr");
    tr.dataset.service = r.service;
    tr.appendChild(el("td", r.service, "service-name"));
    tr.appendChild(el("td", r.up ? "up" : "down", r.up ? "health-ok" : "health-bad"));
    tr.appendChild(el("td", pct(w("1h").availability_percent), "num"));
    tr.appendChild(el("td", pct(w("24h").availability_percent), "num"));
    tr.appendChild(el("td", pct(w("30d").availability_percent), "num"));
    tr.appendChild(el("td", w("30d").nines === null || w("30d").nines === undefined ? "no downtime" : num(w("30d").nines, 2), "num"));
    const budget = w("30d").error_budget_remaining_percent;
    tr.appendChild(el("td", r.slo_percent ? num(budget, 1) + "% of " + r.slo_percent + "%" : "no SLO", budget !== null && budget !== undefined && budget < 0 ? "num health-bad" : "num"));
    tr.appendChild(el("td", r.incidents.length, "num"));
    const cell = el("td"); cell.appendChild(timeline(r)); tr.appendChild(cell);
    tbody.appendChild(tr);
  }
  table.appendChild(tbody);
  box.className = "";
  box.replaceChildren(table);
}

// Three independent loops, so a slow answer in one panel (a registry read
// waits for a leader during an election) never delays the cluster view.
function every(ms, step) {
  const run = async () => {
    const started = Date.now();
    try {
      await step();
    } finally {
      setTimeout(run, Math.max(0, ms - (Date.now() - started)));
    }
  };
  run();
}

async function pollCluster() {
  const banner = document.getElementById("banner");
  try {
    const res = await getJson("/v1/dashboard");
    if (res.status !== 200 || !res.body) throw new Error("answered " + res.status);
    drawCluster(res.body);
    banner.hidden = true;
    document.querySelector("main").classList.remove("stale");
    document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (e) {
    banner.textContent = "The dashboard's member does not answer (" + (e.message || e) + "); showing the last view.";
    banner.hidden = false;
    document.querySelector("main").classList.add("stale");
    setPill("leader", "Leader: unknown", false);
  }
}

async function pollServices() {
  try {
    await drawServices(await getJson("/v1/services"));
  } catch (e) {
    await drawServices({ status: 0, body: null });
  }
}

async function pollAvailability() {
  try {
    drawAvailability(await getJson("/v1/availability"));
  } catch (e) {
    drawAvailability({ status: 0, body: null });
  }
}

function start() {
  every(POLL_MS, pollCluster);
  every(POLL_MS * SERVICES_EVERY, pollServices);
  every(POLL_MS * AVAILABILITY_EVERY, pollAvailability);
}

start();
