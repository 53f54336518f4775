// The nines dashboard: polls /v1/dashboard every second and /v1/services
// every two seconds, and draws them with textContent only (names and
// service data never become markup).
"use strict";

const POLL_MS = 1000;
const SERVICES_EVERY = 2;
const FETCH_TIMEOUT_MS = 900;

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

// The registry's answer is drawn from whatever fields it carries: a list of
// services, or an object with a `services` list, or a map by name.
function serviceEntries(body) {
  if (Array.isArray(body)) return body;
  if (body && Array.isArray(body.services)) return body.services;
  if (body && typeof body === "object") {
    return Object.entries(body).map(([name, s]) => Object.assign({ name }, typeof s === "object" ? s : { value: s }));
  }
  return [];
}

function describeService(s) {
  const name = typeof s === "string" ? s : (s.name || s.service || s.id || "?");
  const parts = [];
  const inst = s && Array.isArray(s.instances) ? s.instances : null;
  if (inst) {
    const healthy = inst.filter((i) => i.healthy === true || i.state === "passing" || i.state === "healthy" || i.health === "passing" || i.status === "passing").length;
    parts.push(healthy + "/" + inst.length + " healthy");
  } else {
    for (const k of ["healthy", "instances", "instance_count", "passing", "total"]) {
      if (s && typeof s[k] === "number") parts.push(k + " " + s[k]);
    }
  }
  return name + (parts.length ? " — " + parts.join(", ") : "");
}

function drawServices(res) {
  const box = document.getElementById("services");
  if (res.status === 404) {
    box.replaceChildren(el("span", "no registry on this member"));
    box.className = "muted";
    return;
  }
  if (res.status !== 200) {
    box.replaceChildren(el("span", res.status ? "registry answered " + res.status : "registry not reachable"));
    box.className = "muted";
    return;
  }
  const list = serviceEntries(res.body);
  if (list.length === 0) {
    box.replaceChildren(el("span", "no services registered"));
    box.className = "muted";
    return;
  }
  const ul = el("ul", null, "services");
  for (const s of list) ul.appendChild(el("li", describeService(s)));
  box.className = "";
  box.replaceChildren(ul);
}

let tick = 0;
async function poll() {
  const banner = document.getElementById("banner");
  try {
    const res = await getJson("/v1/dashboard");
    if (res.status !== 200 || !res.body) throw new Error("answered " + res.status);
    drawCluster(res.body);
    banner.hidden = true;
    document.querySelector("main").classList.remove("stale");
    document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (e) {
    banner.textContent = "This member does not answer (" + (e.message || e) + "); showing the last view.";
    banner.hidden = false;
    document.querySelector("main").classList.add("stale");
    setPill("leader", "Leader: unknown", false);
  }
  if (tick % SERVICES_EVERY === 0) {
    try {
      drawServices(await getJson("/v1/services"));
    } catch (e) {
      drawServices({ status: 0, body: null });
    }
  }
  tick++;
  setTimeout(poll, POLL_MS);
}

poll();
