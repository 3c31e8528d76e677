// The pcipool dashboard: reads the API with the operator's token, re-reads on every `change` event.
"use strict";

const state = { token: sessionStorage.getItem("pcipool-token") || "", role: "", devices: [], open: null };
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

function renderDevices() {
  const search = $("search").value.trim().toLowerCase();
  const wanted = $("state-filter").value;
  const operator = state.role === "operator" || state.role === "admin";
  const body = $("devices").tBodies[0];
  body.replaceChildren();
  const shown = state.devices.filter((d) =>
    (!wanted || d.state === wanted) &&
    (!search || d.fdid.toLowerCase().includes(search) || d.name.toLowerCase().includes(search)));
  for (const d of shown) {
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
  $("device-count").textContent = shown.length + " of " + state.devices.length;
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

async function refresh() {
  if (!state.token) return;
  // Each part on its own, and only what the role may read (verifying the chain is for operators).
  const operator = state.role === "operator" || state.role === "admin";
  const nothing = Promise.resolve(null);
  const [devices, leases, hosts, chain] = await Promise.allSettled([
    api("/v1/devices"), api("/v1/leases"), api("/v1/hosts"),
    operator ? api("/v1/audit/verify") : nothing,
  ]);
  const failed = [devices, leases, hosts, chain].find((r) => r.status === "rejected");
  showError(failed ? failed.reason : null);
  if (devices.status === "fulfilled") {
    state.devices = devices.value;
    renderStates();
    renderDevices();
  }
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
    fact(facts, "qualified for", d.info.models.join(", ") || "no access model");
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
