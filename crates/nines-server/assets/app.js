// The nines dashboard: polls /v1/dashboard every second, /v1/services and
// /v1/gateways every two seconds, /v1/availability every three and
// /v1/backups every five, and draws them with textContent only (names and
// service data never become markup).
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

// The message of an API error body (`{"error": {"code", "message"}}`).
function errorText(body) {
  return body && body.error && body.error.message ? ": " + body.error.message : "";
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

// What gateways saw of a service's requests in a window (`requests`,
// `failed`, `success_percent`), when any gateway reports it.
function requestsOk(g) {
  if (!g || !g.requests) return "no requests";
  return pct(g.success_percent) + " of " + g.requests;
}

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
  for (const h of ["Service", "Now", "1 h", "24 h", "30 d", "Nines (30 d)", "Budget left (30 d)", "Requests ok (24 h)", "Incidents", "Last hour"]) head.appendChild(el("th", h));
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
    tr.appendChild(el("td", requestsOk(w("24h").gateway_requests), "num requests-ok"));
    tr.appendChild(el("td", r.incidents.length, "num"));
    const cell = el("td"); cell.appendChild(timeline(r)); tr.appendChild(cell);
    tbody.appendChild(tr);
  }
  table.appendChild(tbody);
  box.className = "";
  box.replaceChildren(table);
}

// Gateways from /v1/gateways: `{"gateways": [{"name", "updated_ms",
// "clusters": [{"name", "balance", "backends": [...]}], "listeners":
// [{"name", "protocol", "addr", "routes": [{"route", "cluster",
// "requests", "responses_5xx"}] or "cluster"}]}]}`, each as the gateway last
// published it. Requests per second are computed here: the
// difference of a backend's request counter between two reports, over the
// time between them (the reports' own `updated_ms`, so a report seen twice
// keeps its rate instead of dropping to zero).
const GATEWAYS_EVERY = 2;
const GATEWAY_STALE_MS = 10000;
const counters = new Map();

function rateOf(key, requests, at) {
  const before = counters.get(key);
  if (before && before.at === at) return before.rate;
  let rate = null;
  // A counter that went down started over (a restarted gateway): no rate
  // until the next report.
  if (before && at > before.at && requests >= before.requests) {
    rate = (requests - before.requests) * 1000 / (at - before.at);
  }
  counters.set(key, { requests, at, rate });
  return rate;
}

function perSecond(v) { return v === null || v === undefined ? "–" : v.toFixed(v < 10 ? 1 : 0); }

function latency(us) {
  if (us === null || us === undefined) return "–";
  return us >= 1000 ? (us / 1000).toFixed(1) + " ms" : us + " µs";
}

function ago(ms) {
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  return s < 60 ? s + " s ago" : Math.round(s / 60) + " min ago";
}

function drawGatewayCluster(gateway, c, at, seen) {
  const div = el("div", null, "cluster");
  div.dataset.name = c.name;
  const backends = Array.isArray(c.backends) ? c.backends : [];
  const rows = backends.map((b) => {
    const key = gateway + "/" + c.name + "/" + b.addr;
    seen.add(key);
    return { b, rate: rateOf(key, b.requests || 0, at) };
  });
  const up = backends.filter((b) => b.state === "up").length;
  // The cluster's own counter (what clients saw, when the report has it)
  // gives its rate; otherwise the backends' attempts add up to it.
  let total = null;
  if (typeof c.requests === "number") {
    const key = gateway + "/" + c.name;
    seen.add(key);
    total = rateOf(key, c.requests, at);
  } else {
    const rates = rows.map((r) => r.rate).filter((r) => r !== null);
    total = rates.length ? rates.reduce((a, r) => a + r, 0) : null;
  }
  const head = el("div", null, "cluster-head");
  head.appendChild(el("strong", c.name, "cluster-name"));
  const parts = [c.service && c.service !== c.name ? "service " + c.service : null, c.balance, up + "/" + backends.length + " up", perSecond(total) + " req/s",
    typeof c.p99_ms === "number" ? "p99 \u2264 " + c.p99_ms + " ms" : null,
    typeof c.failed === "number" ? c.failed + " failed" : null].filter((p) => p);
  head.appendChild(el("span", "  " + parts.join("  ·  "), up > 0 ? "health-ok" : "health-bad"));
  div.appendChild(head);
  if (!backends.length) {
    div.appendChild(el("div", "no backend (service without healthy instances?)", "muted"));
    return div;
  }
  const table = el("table", null, "backends");
  const tr = el("tr");
  for (const h of ["Backend", "State", "Req/s", "Latency (EWMA)", "Errors", "Active", "Ejections", "Requests"]) tr.appendChild(el("th", h));
  const thead = el("thead"); thead.appendChild(tr); table.appendChild(thead);
  const tbody = el("tbody");
  for (const { b, rate } of rows) {
    const row = el("tr", null, "backend");
    row.dataset.addr = b.addr;
    row.appendChild(el("td", b.addr, "backend-addr"));
    row.appendChild(el("td", b.state, "backend-state state-" + b.state));
    row.appendChild(el("td", perSecond(rate), "num rate"));
    // No latency before the first response (an EWMA of 0 is no sample).
    row.appendChild(el("td", b.requests ? latency(b.ewma_latency_us) : "–", "num"));
    const errors = (b.failures || 0) + (b.responses_5xx || 0);
    row.appendChild(el("td", errors, errors ? "num health-bad" : "num"));
    row.appendChild(el("td", dash(b.active), "num"));
    row.appendChild(el("td", dash(b.ejections), "num"));
    row.appendChild(el("td", dash(b.requests), "num requests"));
    tbody.appendChild(row);
  }
  table.appendChild(tbody);
  div.appendChild(table);
  return div;
}

// One line per listener: where it listens and where its requests go, the
// routes in the order they are tried, each with its request rate.
function drawListeners(gateway, listeners, at, seen) {
  const div = el("div", null, "listeners");
  for (const l of listeners) {
    const line = el("div", null, "listener");
    line.dataset.name = l.name;
    line.appendChild(el("span", l.name + " " + l.protocol + " " + l.addr + ": ", "listener-name"));
    const routes = Array.isArray(l.routes) ? l.routes : [{ route: "*", cluster: l.cluster }];
    routes.forEach((r, i) => {
      let text = r.route + " → " + r.cluster;
      if (typeof r.requests === "number") {
        const key = "route:" + gateway + "/" + l.name + "/" + r.route;
        seen.add(key);
        text += " (" + perSecond(rateOf(key, r.requests, at)) + " req/s)";
      }
      const span = el("span", text, "route");
      span.dataset.route = r.route;
      line.appendChild(span);
      if (i + 1 < routes.length) line.appendChild(el("span", "  ·  ", "muted"));
    });
    div.appendChild(line);
  }
  return div;
}

function drawGateways(res) {
  const box = document.getElementById("gateways");
  const note = (text) => { box.className = "muted"; box.replaceChildren(el("span", text)); };
  if (res.status === 404) return note("no gateway reports on this member");
  if (res.status !== 200 || !res.body) return note(res.status ? "gateways answered " + res.status + errorText(res.body) : "gateways not reachable");
  const gateways = Array.isArray(res.body.gateways) ? res.body.gateways : [];
  if (!gateways.length) return note("no gateway reporting (nines gateway --config FILE, or nines playground)");
  const seen = new Set();
  const parts = gateways.map((g) => {
    const div = el("div", null, "gateway");
    div.dataset.name = g.name;
    const head = el("div", null, "gateway-head");
    head.appendChild(el("strong", g.name, "gateway-name"));
    if (g.updated_ms) {
      const stale = Date.now() - g.updated_ms > GATEWAY_STALE_MS;
      head.appendChild(el("span", "reported " + ago(g.updated_ms) + (stale ? " (stale)" : ""), stale ? "stale-note" : "muted"));
    }
    div.appendChild(head);
    const at = g.updated_ms || Date.now();
    if (Array.isArray(g.listeners) && g.listeners.length) div.appendChild(drawListeners(g.name, g.listeners, at, seen));
    for (const c of (Array.isArray(g.clusters) ? g.clusters : [])) div.appendChild(drawGatewayCluster(g.name, c, at, seen));
    return div;
  });
  for (const key of Array.from(counters.keys())) if (!seen.has(key)) counters.delete(key);
  box.className = "";
  box.replaceChildren(...parts);
}

// Backups from /v1/backups: `{"repositories": [{"repository", "chain":
// [{"id", "kind", "parent", "finished_ms", "bytes", "revision"}],
// "last_run": {"at_ms", "ok", "error", "duration_ms", "kind"}}]}`, the
// records in the store. When the store cannot be read (no quorum), a member
// that runs scheduled backups still answers with its own view (`repo`,
// `last`, `backups`), read here into the same form.
const BACKUPS_EVERY = 5;
const CHAIN_SHOWN_MAX = 40;
const SETS_LISTED_MAX = 6;
const KIND_NAMES = { full: "full", diff: "differential", differential: "differential", incr: "incremental", incremental: "incremental" };
const KIND_LETTERS = { full: "F", differential: "D", incremental: "I" };

function schedulerView(body) {
  const last = body.last;
  return [{
    repository: body.repo,
    chain: body.backups.map((b) => ({
      id: b.id, kind: b.kind, parent: b.parent, bytes: b.bytes, revision: b.end_revision,
      finished_ms: b.finished_unix_secs ? b.finished_unix_secs * 1000 : null,
    })),
    last_run: last ? {
      at_ms: last.started_unix_secs * 1000, ok: last.ok, error: last.error, kind: last.kind,
      duration_ms: Math.round((last.duration_secs || 0) * 1000),
    } : null,
  }];
}

function repositories(body) {
  if (body && Array.isArray(body.repositories) && (body.repositories.length || !Array.isArray(body.backups))) return body.repositories;
  if (body && Array.isArray(body.backups)) return schedulerView(body);
  return [];
}

function drawChain(chain) {
  const sets = chain.slice().sort((a, b) => (a.finished_ms || 0) - (b.finished_ms || 0)).slice(-CHAIN_SHOWN_MAX);
  const div = el("div", null, "chain");
  sets.forEach((s, i) => {
    const kind = KIND_NAMES[s.kind] || s.kind;
    if (kind === "full" && i > 0) div.appendChild(el("span", null, "gap"));
    const chip = el("span", KIND_LETTERS[kind] || "?", "set " + kind);
    chip.title = s.id + " (" + kind + (s.parent ? ", on " + s.parent : "") + ")";
    div.appendChild(chip);
  });
  return div;
}

function drawLastRun(run) {
  if (!run) return el("div", "no run recorded", "muted last-run");
  const div = el("div", null, "last-run");
  div.appendChild(el("span", "Last run: "));
  div.appendChild(el("span", run.ok ? "ok" : "failed", run.ok ? "health-ok" : "health-bad"));
  const when = run.at_ms ? new Date(run.at_ms).toLocaleTimeString() : "–";
  div.appendChild(el("span", "  " + (KIND_NAMES[run.kind] || run.kind || "") + "  at " + when + "  in " + dash(run.duration_ms) + " ms", "muted"));
  if (run.error) div.appendChild(el("div", run.error, "health-bad"));
  return div;
}

function drawRepository(r) {
  const div = el("div", null, "repository");
  div.dataset.repository = r.repository;
  div.appendChild(el("div", r.repository, "repository-name muted"));
  const chain = Array.isArray(r.chain) ? r.chain : [];
  if (!chain.length) {
    div.appendChild(el("div", "no backup yet: nines backup create --kind full --repo " + r.repository, "muted"));
  } else {
    div.appendChild(drawChain(chain));
    const table = el("table", null, "sets");
    const tr = el("tr");
    for (const h of ["Set", "Kind", "Finished", "Size", "Revision"]) tr.appendChild(el("th", h));
    const thead = el("thead"); thead.appendChild(tr); table.appendChild(thead);
    const tbody = el("tbody");
    const newest = chain.slice().sort((a, b) => (b.finished_ms || 0) - (a.finished_ms || 0)).slice(0, SETS_LISTED_MAX);
    for (const s of newest) {
      const row = el("tr", null, "set-row");
      row.dataset.id = s.id;
      row.appendChild(el("td", s.id));
      row.appendChild(el("td", KIND_NAMES[s.kind] || s.kind));
      row.appendChild(el("td", s.finished_ms ? new Date(s.finished_ms).toLocaleString() : "–"));
      row.appendChild(el("td", bytes(s.bytes), "num"));
      row.appendChild(el("td", dash(s.revision), "num"));
      tbody.appendChild(row);
    }
    table.appendChild(tbody);
    div.appendChild(table);
  }
  div.appendChild(drawLastRun(r.last_run));
  return div;
}

function drawBackups(res) {
  const box = document.getElementById("backups");
  const note = (text) => { box.className = "muted"; box.replaceChildren(el("span", text)); };
  const hint = "no backup yet: nines backup create --kind full --repo DIR";
  if (res.status === 404) return note(hint + " (members with --backup-repo DIR take them on a schedule)");
  if (res.status !== 200 || !res.body) return note(res.status ? "backups answered " + res.status + errorText(res.body) : "backups not reachable");
  const repos = repositories(res.body);
  if (!repos.length) return note(hint);
  box.className = "";
  box.replaceChildren(...repos.map(drawRepository));
}

// Independent loops, so a slow answer in one panel (a registry read
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

async function pollGateways() {
  try {
    drawGateways(await getJson("/v1/gateways"));
  } catch (e) {
    drawGateways({ status: 0, body: null });
  }
}

async function pollBackups() {
  try {
    drawBackups(await getJson("/v1/backups"));
  } catch (e) {
    drawBackups({ status: 0, body: null });
  }
}

function start() {
  every(POLL_MS, pollCluster);
  every(POLL_MS * SERVICES_EVERY, pollServices);
  every(POLL_MS * GATEWAYS_EVERY, pollGateways);
  every(POLL_MS * AVAILABILITY_EVERY, pollAvailability);
  every(POLL_MS * BACKUPS_EVERY, pollBackups);
}

start();
