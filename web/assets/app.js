// The admin dashboard: the control API, with the operator token kept in
// this tab's sessionStorage only.
"use strict";

const api = "/control/v1";
let token = sessionStorage.getItem("tenancy-token") || "";
let current = null; // the slug whose audit log is shown
let auditAfter = 0;

const $ = (sel) => document.querySelector(sel);

function say(text, isError) {
  const s = $("#status");
  s.textContent = text;
  s.className = isError ? "error" : "";
}

async function call(method, path, body) {
  const opts = { method, headers: { Authorization: "Bearer " + token } };
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const resp = await fetch(api + path, opts);
  const data = await resp.json().catch(() => ({}));
  if (resp.status === 401) {
    sessionStorage.removeItem("tenancy-token");
    showLogin();
  }
  if (!resp.ok) {
    const err = new Error((data.detail || resp.statusText) + (data.field ? " (field: " + data.field + ")" : ""));
    err.status = resp.status;
    throw err;
  }
  return data;
}

function cell(tr, text, cls) {
  const td = document.createElement("td");
  td.textContent = text === undefined || text === null ? "" : String(text);
  if (cls) td.className = cls;
  tr.appendChild(td);
  return td;
}

function size(bytes) {
  if (bytes === undefined) return "–";
  const units = ["B", "kB", "MB", "GB", "TB"];
  let i = 0;
  while (bytes >= 1024 && i < units.length - 1) { bytes /= 1024; i++; }
  return (i ? bytes.toFixed(1) : bytes) + " " + units[i];
}

// versions maps a tenant to its migration summary: its own target, or the
// shared tables of its server.
function versions(status) {
  const bySlug = {}, shared = {};
  for (const t of status.targets || []) {
    const v = t.summary === "current" ? "v" + t.state.version : t.summary + (t.state ? " v" + t.state.version : "");
    if (t.target.slug) bySlug[t.target.slug] = v;
    else shared[t.target.server] = v;
  }
  return (tn) => bySlug[tn.slug] || (tn.model === "shared" ? shared[tn.placement.server] : undefined) || "–";
}

async function loadTenants() {
  say("Loading tenants…");
  try {
    const [list, mig] = await Promise.all([call("GET", "/tenants?usage=true"), call("GET", "/migrations")]);
    const version = versions(mig);
    const body = $("#tenants tbody");
    body.replaceChildren();
    for (const tn of list.items) {
      const tr = document.createElement("tr");
      tr.dataset.slug = tn.slug;
      if (tn.slug === current) tr.className = "selected";
      const th = document.createElement("th");
      th.scope = "row";
      th.textContent = tn.slug;
      tr.appendChild(th);
      cell(tr, tn.name);
      cell(tr, tn.tier);
      cell(tr, tn.model);
      cell(tr, tn.placement.server + "/" + tn.placement.database + "/" + tn.placement.schema, "mono");
      cell(tr, tn.status, "status-" + tn.status);
      cell(tr, size(tn.usage && tn.usage.bytes), "num");
      cell(tr, tn.usage ? tn.usage.rows : "–", "num");
      cell(tr, tn.usage && tn.usage.requests !== undefined ? tn.usage.requests : "–", "num");
      cell(tr, tn.usage && tn.usage.rate_limited !== undefined ? tn.usage.rate_limited : "–", "num");
      cell(tr, version(tn));
      const actions = cell(tr, "");
      actions.appendChild(button("Audit log", "Show the audit log of " + tn.slug, () => showAudit(tn.slug)));
      for (const verb of ["suspend", "resume", "delete", "restore"]) {
        actions.appendChild(button(verb, verb + " " + tn.slug, () => lifecycle(tn.slug, verb)));
      }
      actions.appendChild(button("move…", "move " + tn.slug + " to another model or server", () => chooseMove(tn)));
      body.appendChild(tr);
    }
    fillSelect($("#tier-slug"), list.items.map((tn) => tn.slug));
    fillSelect($("#move-slug"), list.items.map((tn) => tn.slug));
    say(list.items.length + " tenants.");
    await loadEvents();
  } catch (e) {
    say("Could not load the tenants: " + e.message, true);
  }
}

function button(text, label, onclick) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = text;
  b.setAttribute("aria-label", label);
  b.addEventListener("click", onclick);
  return b;
}

async function lifecycle(slug, verb) {
  try {
    await call("POST", "/tenants/" + encodeURIComponent(slug) + "/" + verb);
    await loadTenants();
    say(slug + ": " + verb + " done.");
  } catch (e) {
    say(slug + ": " + verb + ": " + e.message, true);
  }
}

// loadEvents shows the latest page of the control-plane log, newest first.
async function loadEvents() {
  try {
    let page = await call("GET", "/events?limit=1000");
    const items = page.items;
    while (page.next) { // the log is read oldest first: follow it to its end
      page = await call("GET", "/events?limit=1000&after=" + page.next);
      items.push(...page.items);
    }
    const body = $("#events tbody");
    body.replaceChildren();
    for (const e of items.slice(-50).reverse()) {
      const tr = document.createElement("tr");
      cell(tr, e.seq, "num");
      cell(tr, new Date(e.at).toLocaleString());
      cell(tr, e.kind);
      cell(tr, e.tenant_slug);
      cell(tr, e.operator, "mono");
      cell(tr, e.client_ip, "mono");
      cell(tr, e.details && Object.keys(e.details).length ? JSON.stringify(e.details) : "", "mono");
      body.appendChild(tr);
    }
  } catch (e) {
    say("Could not read the control-plane log: " + e.message, true);
  }
}

async function verifyEvents() {
  const v = $("#events-verification");
  try {
    const r = await call("GET", "/events/verify");
    v.textContent = r.ok ? "The chain of " + r.events + " events verifies." : "TAMPERED at event " + r.first_bad + ": " + r.reason;
    v.className = r.ok ? "ok" : "error";
  } catch (e) {
    v.textContent = "Could not verify: " + e.message;
    v.className = "error";
  }
}

// showChart draws the tenant's requests per minute on this node (green) and
// those answered 429 (red) as bars, with the figures in the caption and in
// each bar's title for screen readers.
async function showChart(slug) {
  const caption = $("#usage-chart-caption");
  try {
    const s = await call("GET", "/tenants/" + encodeURIComponent(slug) + "/usage/series");
    const pts = s.points;
    const total = pts.reduce((a, p) => a + p.requests, 0);
    const limited = pts.reduce((a, p) => a + p.rate_limited, 0);
    const max = Math.max(1, ...pts.map((p) => p.requests));
    const W = 300, H = 60, bw = W / pts.length, ns = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(ns, "svg");
    const label = "Requests per minute to " + slug + " over the last " + pts.length + " minutes on this node: " +
      total + " in all, " + limited + " answered 429";
    svg.setAttribute("viewBox", "0 0 " + W + " " + H);
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", label);
    pts.forEach((p, i) => {
      for (const [n, cls] of [[p.requests, "requests"], [p.rate_limited, "limited"]]) {
        if (!n) continue;
        const h = Math.max(1, (n / max) * H);
        const r = document.createElementNS(ns, "rect");
        r.setAttribute("x", i * bw + 1);
        r.setAttribute("width", Math.max(1, bw - 2));
        r.setAttribute("y", H - h);
        r.setAttribute("height", h);
        r.setAttribute("class", cls);
        const title = document.createElementNS(ns, "title");
        title.textContent = new Date(p.at).toLocaleTimeString() + ": " + p.requests + " requests, " + p.rate_limited + " answered 429";
        r.appendChild(title);
        svg.appendChild(r);
      }
    });
    $("#usage-chart-svg").replaceChildren(svg);
    caption.textContent = label + ".";
  } catch (e) {
    $("#usage-chart-svg").replaceChildren();
    caption.textContent = "No request counts for " + slug + ": " + e.message;
  }
}

async function showAudit(slug, more) {
  if (!more) { current = slug; auditAfter = 0; $("#audit-table tbody").replaceChildren(); $("#verification").textContent = ""; showChart(slug); }
  $("#audit").hidden = false;
  $("#audit-h").textContent = "Audit log of " + slug;
  for (const tr of document.querySelectorAll("#tenants tbody tr")) tr.className = tr.dataset.slug === slug ? "selected" : "";
  try {
    const page = await call("GET", "/tenants/" + encodeURIComponent(slug) + "/audit?limit=50&after=" + auditAfter);
    const body = $("#audit-table tbody");
    for (const e of page.items) {
      const tr = document.createElement("tr");
      cell(tr, e.seq, "num");
      cell(tr, new Date(e.at).toLocaleString());
      cell(tr, e.actor, "mono");
      cell(tr, e.op);
      cell(tr, e.table);
      cell(tr, JSON.stringify(e.row_key), "mono");
      cell(tr, JSON.stringify(e.changes), "mono");
      cell(tr, [e.client_ip, e.user_agent].filter(Boolean).join(" "), "mono");
      cell(tr, e.request_id, "mono");
      body.appendChild(tr);
    }
    auditAfter = page.next || 0;
    $("#audit-more").hidden = !page.next;
    $("#audit-caption").textContent = body.children.length + " changes to " + slug + "'s data, oldest first.";
    if (!more) $("#audit-h").focus();
  } catch (e) {
    say("Could not read the audit log of " + slug + ": " + e.message, true);
  }
}

async function verify() {
  const v = $("#verification");
  try {
    const r = await call("GET", "/tenants/" + encodeURIComponent(current) + "/audit/verify");
    v.textContent = r.ok ? "The chain of " + r.entries + " entries verifies." : "TAMPERED at entry " + r.first_bad + ": " + r.reason;
    v.className = r.ok ? "ok" : "error";
  } catch (e) {
    v.textContent = "Could not verify: " + e.message;
    v.className = "error";
  }
}

async function create(ev) {
  ev.preventDefault();
  const f = ev.target;
  const body = { slug: f.slug.value.trim(), model: f.model.value, name: f.name.value.trim(), tier: f.tier.value.trim() };
  say("Creating " + body.slug + "…");
  try {
    const tn = await call("POST", "/tenants", body);
    f.reset();
    await loadTenants();
    say("Created " + tn.slug + " (" + tn.model + ").");
  } catch (e) {
    say("Could not create " + body.slug + ": " + e.message, true);
  }
}

// fillSelect replaces a select's options, keeping the current choice.
function fillSelect(sel, values) {
  const keep = sel.value;
  sel.replaceChildren(...values.map((v) => new Option(v, v)));
  if (values.includes(keep)) sel.value = keep;
}

async function loadPlans() {
  try {
    const plans = await call("GET", "/plans");
    fillSelect($("#tier-tier"), plans.items.map((p) => p.tier));
  } catch (e) {
    say("Could not read the plans: " + e.message, true);
  }
}

async function changeTier(ev) {
  ev.preventDefault();
  const slug = $("#tier-slug").value, tier = $("#tier-tier").value;
  try {
    await call("POST", "/tenants/" + encodeURIComponent(slug) + "/change-tier", { tier });
    await loadTenants();
    say(slug + " is now on the " + tier + " tier.");
  } catch (e) {
    say("Could not change the tier of " + slug + ": " + e.message, true);
  }
}

// The steps of a move, in order, for its progress bar.
const moveSteps = ["started", "prepared", "copy", "copied", "fenced", "marked", "switched", "done"];

// chooseMove fills the move form with a tenant and puts the focus on it.
function chooseMove(tn) {
  $("#move-slug").value = tn.slug;
  const other = ["shared", "schema", "database"].find((m) => m !== tn.model);
  $("#move-model").value = other;
  $("#move-model").focus();
}

async function loadServers() {
  try {
    const servers = await call("GET", "/servers");
    const sel = $("#move-server");
    const keep = sel.value;
    sel.replaceChildren(new Option("the tenant's own", ""), ...servers.items.map((s) => new Option(s.name + (s.region ? " (" + s.region + ")" : ""), s.name)));
    sel.value = keep;
  } catch (e) {
    say("Could not read the servers: " + e.message, true);
  }
}

// startMove starts a move, then polls its operation until it ends, showing each
// step as it is reported.
async function startMove(ev) {
  ev.preventDefault();
  const slug = $("#move-slug").value, model = $("#move-model").value, server = $("#move-server").value;
  const box = $("#move-progress"), bar = $("#move-bar"), st = $("#move-status");
  const submit = $("#move-form button[type=submit]");
  box.hidden = false;
  $("#move-label").textContent = "Move of " + slug + " to " + model;
  bar.value = 0;
  st.className = "";
  st.textContent = "Starting the move of " + slug + "…";
  submit.disabled = true;
  try {
    let op = await call("POST", "/tenants/" + encodeURIComponent(slug) + "/move", server ? { model, server } : { model });
    while (op.state === "running") {
      bar.value = moveSteps.indexOf(op.step) + 1;
      st.textContent = "Moving " + slug + ": " + (op.step || "starting") + (op.rows ? ", " + op.rows + " rows copied" : "") + "…";
      await new Promise((r) => setTimeout(r, 250));
      op = await call("GET", "/operations/" + encodeURIComponent(op.id));
    }
    if (op.state !== "succeeded") {
      const e = op.error || {};
      throw new Error((e.detail || "the move failed") + (e.field ? " (field: " + e.field + ")" : ""));
    }
    bar.value = bar.max;
    await loadTenants(); // and the control-plane log, with the move
    const r = op.result, p = r.to;
    st.textContent = "Moved " + slug + " from " + r.from_model + " to " + r.to_model + " at " + [p.server, p.database, p.schema].join("/") +
      ": " + r.rows + " rows, writers paused " + (r.pause_ns / 1e6).toFixed(1) + " ms.";
    st.className = "ok";
  } catch (e) {
    st.textContent = "Could not move " + slug + ": " + e.message;
    st.className = "error";
  } finally {
    submit.disabled = false;
  }
}

function showLogin() {
  $("#dashboard").hidden = true;
  $("#login").hidden = false;
  $("#token").focus();
}

function start() {
  $("#login").hidden = true;
  $("#dashboard").hidden = false;
  loadTenants();
  loadPlans();
  loadServers();
}

document.addEventListener("DOMContentLoaded", () => {
  // The demo prints a link with the token in the fragment, which browsers
  // never send to the server; take it and drop it from the address bar.
  const m = location.hash.match(/token=([^&]+)/);
  if (m) {
    token = decodeURIComponent(m[1]);
    sessionStorage.setItem("tenancy-token", token);
    history.replaceState(null, "", location.pathname);
  }
  $("#login-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    token = $("#token").value;
    sessionStorage.setItem("tenancy-token", token);
    start();
  });
  $("#create-form").addEventListener("submit", create);
  $("#tier-form").addEventListener("submit", changeTier);
  $("#move-form").addEventListener("submit", startMove);
  $("#refresh").addEventListener("click", loadTenants);
  $("#verify").addEventListener("click", verify);
  $("#events-verify").addEventListener("click", verifyEvents);
  $("#audit-more").addEventListener("click", () => showAudit(current, true));
  if (token) start(); else showLogin();
});
