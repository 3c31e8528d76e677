// The pcipool dashboard: reads the API with the operator's token, re-reads on every `change` event.
"use strict";

const state = {
  token: sessionStorage.getItem("pcipool-token") || "", role: "", devices: [], open: null,
  topology: null, hosts: [], leases: [],
};
const SVG = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

async function api(path, options = {}) {
  const headers = Object.assign({ authorization: "Bearer " + state.token }, options.headers || {});
  const resp = await fetch(path, Object.assign({}, options, { headers }));
  const body = await resp.json().catch(() => null);
  if (!resp.ok) {
    const why = body && body.code ? body.code + ": " + body.message : "HTTP " + resp.status;
    throw new Error(why);
  }
  return body;
}

function showError(e) {
  const p = $("error");
  p.hidden = !e;
  p.textContent = e ? String(e.message || e) : "";
}

// The most device rows drawn at once: a 16,384-device pool lists its first rows, and search narrows.
const ROWS = 500;

function renderDevices() {
  const search = $("search").value.trim().toLowerCase();
  const wanted = $("state-filter").value;
  const operator = state.role === "operator" || state.role === "admin";
  const body = $("devices").tBodies[0];
  body.replaceChildren();
  const shown = state.devices.filter((d) =>
    (!wanted || d.state === wanted) &&
    (!search || d.fdid.toLowerCase().includes(search) || d.name.toLowerCase().includes(search)));
  for (const d of shown.slice(0, ROWS)) {
    const tr = document.createElement("tr");
    tr.dataset.fdid = d.fdid;
    const stateCell = document.createElement("td");
    const pill = document.createElement("span");
    pill.className = "state state-" + d.state;
    pill.textContent = d.state;
    stateCell.append(pill);
    tr.append(cell(d.fdid), cell(d.name), stateCell, cell(d.leases.join(", ")));
    const actions = document.createElement("td");
    if (operator) {
      const offer = { available: ["drain"], maintenance: ["undrain"], quarantined: ["clear_quarantine"] }[d.state] || [];
      for (const action of offer) {
        const b = document.createElement("button");
        b.className = "action " + action;
        b.textContent = action.replace("_", " ");
        b.addEventListener("click", () => act(d.fdid, action));
        actions.append(b);
      }
    }
    tr.append(actions);
    tr.addEventListener("click", (ev) => { if (ev.target.tagName !== "BUTTON") openDevice(d.fdid); });
    body.append(tr);
  }
  $("device-count").textContent = shown.length + " of " + state.devices.length +
    (shown.length > ROWS ? " (the first " + ROWS + " listed: search or filter to narrow)" : "");
}

function renderStates() {
  const select = $("state-filter");
  const known = new Set([...select.options].map((o) => o.value));
  for (const s of new Set(state.devices.map((d) => d.state))) {
    if (!known.has(s)) select.append(new Option(s, s));
  }
}

async function act(fdid, action) {
  try {
    await api("/v1/devices/" + encodeURIComponent(fdid) + "/actions", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(action),
    });
  } catch (e) {
    showError(e);
  }
}

// The fabric as a graph: switches in a row, each switch's hosts in a grid beneath it, links as lines,
// and every lease as an arc from its lender to its borrower. Drawn again on every change; the layout
// depends only on the topology, so hosts keep their places.
function svg(tag, attrs, title) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  if (title) {
    const t = document.createElementNS(SVG, "title");
    t.textContent = title;
    el.append(t);
  }
  return el;
}

function layout(topology, hosts) {
  const attached = new Map();
  for (const l of topology.links) {
    const [host, sw] = l.a.startsWith("switch:") ? [l.b, l.a] : [l.a, l.b];
    if (sw.startsWith("switch:") && !host.startsWith("switch:")) attached.set(host.split("/")[0], sw.slice(7));
  }
  const groups = new Map(topology.switches.map((s) => [s, []]));
  groups.set("", []);
  for (const h of hosts) groups.get(attached.get(h.node) || "").push(h);
  const used = [...groups].filter(([s, hs]) => s || hs.length);
  const cell = hosts.length > 128 ? 9 : 26;
  const cols = used.map(([, hs]) => Math.max(1, Math.ceil(Math.sqrt(hs.length * 1.5))));
  const width = Math.max(600, cols.reduce((t, c) => t + c * cell + 40, 0));
  const place = new Map();
  const switchAt = new Map();
  let x = 20;
  let height = 0;
  used.forEach(([sw, hs], i) => {
    const w = cols[i] * cell;
    if (sw) switchAt.set(sw, { x: x + w / 2, y: 24 });
    hs.forEach((h, j) => {
      const at = { x: x + (j % cols[i]) * cell + cell / 2, y: 70 + Math.floor(j / cols[i]) * cell };
      place.set(h.node, at);
      height = Math.max(height, at.y + cell);
    });
    x += w + 40;
  });
  return { place, switchAt, width, height: Math.max(height, 110), cell };
}

function renderTopology() {
  const topology = state.topology;
  const area = $("topology");
  if (!topology) return;
  const shape = layout(topology, state.hosts);
  area.setAttribute("viewBox", "0 0 " + shape.width + " " + shape.height);
  area.setAttribute("width", shape.width);
  area.setAttribute("height", shape.height);
  area.replaceChildren();
  const at = (end) => end.startsWith("switch:") ? shape.switchAt.get(end.slice(7)) : shape.place.get(end.split("/")[0]);
  for (const l of topology.links) {
    const a = at(l.a);
    const b = at(l.b);
    if (!a || !b) continue;
    const uplink = l.a.startsWith("switch:") && l.b.startsWith("switch:");
    area.append(svg("line", { x1: a.x, y1: a.y, x2: b.x, y2: b.y, class: uplink ? "uplink" : "link" },
      l.a + " - " + l.b + ": Gen" + l.generation + " x" + l.width + ", " + l.mb_per_s + " MB/s"));
  }
  const lenders = new Set(state.devices.map((d) => d.fdid.split(":")[0]));
  const borrowing = new Set(state.leases.map((l) => l.borrower));
  for (const [sw, p] of shape.switchAt) {
    area.append(svg("rect", { x: p.x - 22, y: p.y - 10, width: 44, height: 20, rx: 4, class: "switch" }, "switch " + sw));
    const label = svg("text", { x: p.x, y: p.y + 4, class: "switch-label" });
    label.textContent = sw;
    area.append(label);
  }
  const r = Math.max(3, shape.cell / 3.2);
  for (const h of state.hosts) {
    const p = shape.place.get(h.node);
    const kind = borrowing.has(h.node) ? "borrower" : lenders.has(h.node) ? "lender" : "idle";
    const circle = svg("circle", { cx: p.x, cy: p.y, r, class: "host " + kind }, h.node + " " + h.name + " (" + h.devices + " devices, agent " + h.agent + ")");
    circle.dataset.node = h.node;
    area.append(circle);
  }
  for (const l of state.leases) {
    const from = shape.place.get(l.fdid.split(":")[0]);
    const to = shape.place.get(l.borrower);
    if (!from || !to) continue;
    const mid = { x: (from.x + to.x) / 2, y: Math.min(from.y, to.y) - 30 };
    const arc = svg("path", { d: "M" + from.x + "," + from.y + " Q" + mid.x + "," + mid.y + " " + to.x + "," + to.y, class: "lease " + l.model },
      "lease " + l.lease_id + ": " + l.fdid + " lent to " + l.borrower + " (" + l.tenant + ", " + l.model + ")");
    arc.dataset.fdid = l.fdid;
    area.append(arc);
  }
  $("fabric-count").textContent = state.hosts.length + " hosts, " + topology.switches.length + " switches, " + topology.links.length + " links, " + state.leases.length + " leases";
}

async function refresh() {
  if (!state.token) return;
  // Each part on its own, and only what the role may read (verifying the chain is for operators).
  const operator = state.role === "operator" || state.role === "admin";
  const nothing = Promise.resolve(null);
  const [devices, leases, hosts, chain, topology] = await Promise.allSettled([
    api("/v1/devices"), api("/v1/leases"), api("/v1/hosts"),
    operator ? api("/v1/audit/verify") : nothing,
    state.topology ? Promise.resolve(state.topology) : api("/v1/topology"),
  ]);
  const failed = [devices, leases, hosts, chain, topology].find((r) => r.status === "rejected");
  showError(failed ? failed.reason : null);
  if (devices.status === "fulfilled") {
    state.devices = devices.value;
    renderStates();
    renderDevices();
  }
  if (topology.status === "fulfilled") state.topology = topology.value;
  if (leases.status === "fulfilled") state.leases = leases.value;
  if (hosts.status === "fulfilled") state.hosts = hosts.value;
  renderTopology();
  if (leases.status === "fulfilled") {
    const lb = $("leases").tBodies[0];
    lb.replaceChildren();
    for (const l of leases.value) {
      const tr = document.createElement("tr");
      tr.dataset.lease = l.lease_id;
      tr.append(cell(l.lease_id), cell(l.fdid), cell(l.borrower), cell(l.tenant), cell(l.model),
        cell(l.state), cell(new Date(l.expires_at).toISOString()));
      lb.append(tr);
    }
  }
  if (hosts.status === "fulfilled") {
    const hb = $("hosts").tBodies[0];
    hb.replaceChildren();
    for (const h of hosts.value) {
      const tr = document.createElement("tr");
      tr.append(cell(h.node), cell(h.name), cell(h.devices), cell(h.agent));
      hb.append(tr);
    }
  }
  if (chain.status === "fulfilled" && chain.value === null) {
    $("chain").textContent = "audit chain: verified by operators";
  } else if (chain.status === "fulfilled") {
    const badge = $("chain");
    badge.textContent = "audit chain: " + (chain.value.ok ? chain.value.records + " records, intact" : "BROKEN");
    badge.className = "badge " + (chain.value.ok ? "ok" : "bad");
  }
}

function fact(body, name, value) {
  const tr = document.createElement("tr");
  const th = document.createElement("th");
  th.textContent = name;
  tr.append(th, cell(value));
  body.append(tr);
}

// One workflow journal as a timeline: a bar per step, as wide as the step took.
function timeline(journal) {
  const div = document.createElement("div");
  div.className = "timeline";
  const total = journal.steps.reduce((t, s) => t + (s.us || 0), 0) || 1;
  for (const s of journal.steps) {
    const bar = document.createElement("span");
    const status = (s.status && s.status.status) || "pending";
    bar.className = "step " + status;
    bar.style.flexGrow = String(Math.max(1, Math.round((100 * (s.us || 0)) / total)));
    const ms = s.us ? (s.us / 1000).toFixed(1) + " ms" : "";
    bar.textContent = s.step;
    bar.title = s.step + ": " + status + (ms ? ", " + ms : "") + (s.status && s.status.error ? " (" + s.status.error + ")" : "");
    div.append(bar);
  }
  return div;
}

async function renderTrail(fdid) {
  const trail = $("device-trail");
  if (state.role !== "operator" && state.role !== "admin") {
    trail.textContent = "The audit trail is for operators.";
    return;
  }
  const chain = await api("/v1/audit/verify");
  const from = Math.max(1, chain.records - 999);
  const records = (await api("/v1/audit?from=" + from + "&limit=1000")).filter((r) => r.target === fdid);
  trail.replaceChildren();
  // A workflow is journalled once per step: show each workflow once, at its latest record.
  const seen = new Set();
  for (const r of records.reverse()) {
    const div = document.createElement("div");
    div.className = "record";
    const meta = document.createElement("div");
    meta.className = "meta";
    meta.textContent = "#" + r.seq + " " + new Date(r.at).toISOString() + " " + r.actor + " " + r.result;
    const what = document.createElement("div");
    what.textContent = r.action;
    div.append(what, meta);
    if (r.action.startsWith("workflow ")) {
      if (seen.has(r.action)) continue;
      seen.add(r.action);
      try {
        div.append(timeline(JSON.parse(r.after)));
      } catch (e) {
        what.textContent += " (journal unreadable)";
      }
    }
    trail.append(div);
  }
}

async function openDevice(fdid) {
  state.open = fdid;
  try {
    const d = await api("/v1/devices/" + encodeURIComponent(fdid));
    $("device-panel").hidden = false;
    $("device-title").textContent = fdid + " (" + d.state + ")";
    const facts = $("device-facts").tBodies[0];
    facts.replaceChildren();
    const hex = (n, w) => n.toString(16).padStart(w, "0");
    fact(facts, "name", d.info.name);
    fact(facts, "vendor:device", hex(d.info.vendor_id, 4) + ":" + hex(d.info.device_id, 4));
    fact(facts, "class", hex(d.info.class, 6));
    fact(facts, "driver", d.info.driver || "none");
    fact(facts, "link", "x" + d.info.link_width + " at " + d.info.link_gts_x10 / 10 + " GT/s");
    fact(facts, "largest BAR", d.info.largest_bar + " bytes");
    // Per access model: qualified, or the findings that kept it out (kept on a rejected device).
    const reasons = (d.detail && d.detail.reasons) || [];
    fact(facts, "qualification", ["lend", "vf", "shared"].map((m) => {
      if (d.info.models.includes(m)) return m + ": qualified";
      const why = reasons.filter((r) => r.startsWith(m + ":")).map((r) => r.slice(m.length + 1).trim());
      return m + ": " + (why.join(", ") || "not qualified");
    }).join("; "));
    fact(facts, "labels", Object.entries(d.info.labels || {}).map(([k, v]) => k + "=" + v).join(", ") || "none");
    fact(facts, "row version", d.version);
    const leases = $("device-leases");
    leases.replaceChildren();
    for (const l of d.leases) {
      const li = document.createElement("li");
      li.textContent = "lease " + l.lease_id + " to " + l.borrower + " (" + l.tenant + ", " + l.model + ", epoch " + l.epoch + ")";
      leases.append(li);
    }
    if (!d.leases.length) leases.append(Object.assign(document.createElement("li"), { textContent: "none" }));
    await renderTrail(fdid);
  } catch (e) {
    showError(e);
  }
}

let pending = null;
function refreshSoon() {
  if (pending) return;
  pending = setTimeout(() => {
    pending = null;
    refresh();
    if (state.open) openDevice(state.open);
  }, 50);
}

function listen() {
  const events = new EventSource("/v1/events");
  events.addEventListener("open", () => { $("live").textContent = "live"; $("live").className = "badge ok"; });
  events.addEventListener("change", refreshSoon);
  events.addEventListener("error", () => { $("live").textContent = "reconnecting"; $("live").className = "badge off"; });
}

async function signIn(token) {
  state.token = token;
  try {
    const who = await api("/v1/whoami");
    state.role = who.role;
    sessionStorage.setItem("pcipool-token", token);
    $("who").textContent = who.name + " (" + who.role + ")";
    document.body.dataset.role = who.role;
    await refresh();
  } catch (e) {
    state.token = "";
    showError(e);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("signin").addEventListener("submit", (ev) => { ev.preventDefault(); signIn($("token").value.trim()); });
  $("search").addEventListener("input", renderDevices);
  $("device-close").addEventListener("click", () => { state.open = null; $("device-panel").hidden = true; });
  $("state-filter").addEventListener("change", renderDevices);
  listen();
  if (state.token) signIn(state.token);
});
