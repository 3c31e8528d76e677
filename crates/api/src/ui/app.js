// The pcipool dashboard: reads the API with the operator's token, re-reads on every `change` event.
"use strict";

const state = { token: sessionStorage.getItem("pcipool-token") || "", role: "", devices: [] };
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

let pending = null;
function refreshSoon() {
  if (pending) return;
  pending = setTimeout(() => { pending = null; refresh(); }, 50);
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
  $("state-filter").addEventListener("change", renderDevices);
  listen();
  if (state.token) signIn(state.token);
});
