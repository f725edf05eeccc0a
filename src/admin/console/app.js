// The Switchboard console: hash-routed views over the admin API. Every value from the API
// is put in the page as text (never as markup). The token lives in this module's memory
// only and goes out as a bearer header.

let token = null;
const main = document.getElementById("main");
// The tenant portal: a platform shows `/portal?token=…` (a short-lived portal token) in its
// own product. The token is taken out of the address at once.
const portal = location.pathname === "/portal";
let portalToken = null;
if (portal) {
  portalToken = new URLSearchParams(location.search).get("token");
  history.replaceState(null, "", `/portal${location.hash}`);
}
const logo = document.getElementById("logo");
const showLogo = () => { logo.hidden = !(logo.complete && logo.naturalWidth > 0); };
logo.addEventListener("load", showLogo);
showLogo();

class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error && body.error.message) || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

async function api(method, path, body) {
  const headers = { authorization: `Bearer ${token}` };
  if (body !== undefined) headers["content-type"] = "application/json";
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await response.text();
  let value = null;
  try { value = text ? JSON.parse(text) : null; } catch { value = text; }
  if (!response.ok) throw new ApiError(response.status, value);
  return value;
}

// el("td", { class: "mono" }, "text", child, …): an element with attributes and children.
function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function show(title, ...content) {
  main.replaceChildren(el("h1", {}, title), ...content.flat(Infinity).filter((c) => c !== null && c !== undefined));
  document.title = `${title} · Switchboard`;
  main.focus();
}

function failure(e) {
  return el("p", { class: "error", role: "alert" }, e instanceof ApiError && e.status === 404 ? "Not found." : e.message);
}

function state(name) {
  return el("span", { class: `state state-${name}` }, name);
}

function table(headings, rows, empty = "Nothing here.") {
  if (rows.length === 0) return el("p", { class: "notice" }, empty);
  return el("table", {}, el("thead", {}, el("tr", {}, headings.map((h) => el("th", { scope: "col" }, h)))), el("tbody", {}, rows));
}

function field(name, label, value = "", type = "text") {
  return el("label", {}, label, el("input", { name, type, value, autocomplete: "off" }));
}

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v) q.set(k, v);
  const text = q.toString();
  return text ? `?${text}` : "";
}

function signedIn(label, admin) {
  for (const id of ["nav", "who", "sign-out"]) document.getElementById(id).hidden = false;
  // Tenants are the platform's: a tenant key or portal does not see the link.
  document.getElementById("nav-tenants").hidden = !admin;
  document.getElementById("sign-out").hidden = portal;
  document.getElementById("who").textContent = label;
}

// The portal signs in with its token, once; an expired or forged one sees nothing.
async function portalSignIn() {
  token = portalToken;
  portalToken = null;
  try {
    await api("GET", "/v1/destinations?limit=1");
  } catch (e) {
    token = null;
    main.replaceChildren(el("p", { class: "error", role: "alert" }, "This portal link has expired or is not valid."));
    return false;
  }
  signedIn("Your deliveries", false);
  return true;
}

// Sign-in: any token the admin API takes. A tenant key sees its own tenant only.
function signIn(message) {
  if (portal) {
    main.replaceChildren(el("p", { class: "error", role: "alert" }, message || "This portal link has expired or is not valid."));
    return;
  }
  token = null;
  for (const id of ["nav", "who", "sign-out"]) document.getElementById(id).hidden = true;
  const error = el("p", { class: "error", role: "alert" }, message || "");
  const form = el("form", { "aria-label": "Sign in" },
    el("label", {}, "Admin token or tenant key", el("input", { name: "token", type: "password", required: true, autocomplete: "off" })),
    el("p", { class: "notice" }, "The admin token is [admin] token in the gateway's configuration (the example configuration keeps it in config/secrets/admin-token); a tenant key starts with sbk_."),
    el("button", { type: "submit" }, "Sign in"), error);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    token = form.elements.token.value.trim();
    try {
      await api("GET", "/v1/destinations?limit=1");
    } catch (e) {
      token = null;
      error.textContent = e.status === 401 ? "That token is not valid." : e.message;
      return;
    }
    const admin = !/^sbk_/.test(token);
    signedIn(`Signed in: ${admin ? "admin" : "tenant key"}`, admin);
    if (!location.hash || location.hash === "#/") location.hash = "#/calls";
    route();
  });
  main.replaceChildren(el("div", { class: "signin card" }, el("h1", {}, "Switchboard console"), form));
  form.elements.token.focus();
}

function eventRow(e) {
  return el("tr", {}, el("td", {}, e.received_at), el("td", {}, e.tenant), el("td", {}, e.source),
    el("td", { class: "mono" }, el("a", { href: `#/events/${e.event_id}` }, e.call_id || "(no call id)")),
    el("td", { class: "mono" }, e.from || ""), el("td", { class: "mono" }, e.to || ""),
    el("td", { class: "mono" }, e.event_id));
}

// Calls: events by call id, phone number, tenant, source and time, newest first.
async function calls(params) {
  const form = el("form", { class: "filters", role: "search", "aria-label": "Find a call" },
    field("call_id", "Call id", params.get("call_id") || ""),
    field("phone", "Phone number", params.get("phone") || ""),
    field("tenant", "Tenant", params.get("tenant") || ""),
    field("source", "Source", params.get("source") || ""),
    field("since", "Since (RFC 3339)", params.get("since") || ""),
    field("until", "Until", params.get("until") || ""),
    el("button", { type: "submit" }, "Search"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const values = Object.fromEntries(new FormData(form));
    location.hash = `#/calls${query(values)}`;
  });
  const results = el("div", {});
  show("Calls", form, results);
  const filters = Object.fromEntries(["call_id", "phone", "tenant", "source", "since", "until"].map((k) => [k, params.get(k)]));
  let cursor = null;
  const body = el("tbody", {});
  const more = el("button", { type: "button", class: "secondary", hidden: true }, "More");
  const load = async () => {
    try {
      const page = await api("GET", `/v1/events${query({ ...filters, limit: "50", cursor })}`);
      for (const e of page.events) body.append(eventRow(e));
      cursor = page.next_cursor;
      more.hidden = !cursor;
      if (body.children.length === 0) results.replaceChildren(el("p", { class: "notice" }, "No event matches."));
    } catch (e) {
      results.replaceChildren(failure(e));
    }
  };
  more.addEventListener("click", load);
  // Follow: new events appear at the top as they arrive (watching an integration go live).
  const follow = el("input", { type: "checkbox", name: "follow" });
  const followLabel = el("label", { class: "row" }, follow, "Follow new events");
  form.append(followLabel);
  const here = location.hash;
  const newest = () => body.querySelector("tr td.mono:last-child")?.textContent;
  const poll = async () => {
    if (location.hash !== here || !follow.checked || !token) return;
    try {
      const page = await api("GET", `/v1/events${query({ ...filters, limit: "50" })}`);
      const top = newest();
      const fresh = [];
      for (const e of page.events) {
        if (e.event_id === top) break;
        const row = eventRow(e);
        row.classList.add("fresh");
        fresh.push(row);
      }
      body.prepend(...fresh);
      if (fresh.length && results.querySelector("p.notice")) results.replaceChildren(body.closest("table") || body, more);
    } catch { /* the next poll tries again */ }
    setTimeout(poll, 2000);
  };
  follow.addEventListener("change", () => { if (follow.checked) poll(); });
  results.replaceChildren(el("table", {}, el("thead", {}, el("tr", {}, ["Received", "Tenant", "Source", "Call", "From", "To", "Event"].map((h) => el("th", { scope: "col" }, h)))), body), more);
  await load();
}

function attemptRows(attempts) {
  return attempts.map((a, i) => el("tr", {},
    el("td", {}, String(i + 1)), el("td", {}, a.at),
    el("td", {}, a.status ? `HTTP ${a.status}` : a.error || "no answer"),
    el("td", {}, `${a.latency_ms.toFixed(1)} ms`),
    el("td", { class: "mono" }, a.response || "")));
}

// One event: its normalized fields, the raw payload, and every delivery with its attempts.
async function event(id) {
  let e;
  try {
    e = await api("GET", `/v1/events/${encodeURIComponent(id)}`);
  } catch (err) {
    return show("Event", failure(err));
  }
  const shown = new Set(["event_id", "tenant", "source", "received_at"]);
  const normalized = Object.entries(e.normalized || {}).filter(([k, v]) => !shown.has(k) && v !== null && typeof v !== "object");
  const payload = typeof e.payload.body === "string" ? pretty(e.payload.body) : "";
  const deliveries = e.deliveries.map((d) => {
    const message = el("span", { class: "notice", role: "status" });
    const replay = el("button", { type: "button", class: "secondary", "data-delivery": d.id }, "Replay");
    replay.hidden = d.state === "pending";
    replay.addEventListener("click", async () => {
      replay.disabled = true;
      try {
        await api("POST", `/v1/deliveries/${d.id}/replay`);
        message.textContent = "Queued again.";
        setTimeout(() => route(), 300);
      } catch (err) {
        message.textContent = err.message;
        replay.disabled = false;
      }
    });
    // The request, rendered from this event by the destination as it is now; secrets and
    // credentials masked.
    const request = el("details", { class: "request" }, el("summary", {}, "Request (as the destination makes it now)"), el("pre", {}, "…"));
    request.addEventListener("toggle", async () => {
      if (!request.open || request.dataset.loaded) return;
      request.dataset.loaded = "1";
      const pre = request.querySelector("pre");
      try {
        const p = await api("POST", `/v1/tenants/${encodeURIComponent(e.tenant)}/render`, { destination_id: d.destination, event_id: e.event_id });
        pre.textContent = [`${p.method} ${p.url}`, ...p.headers.map(([k, v]) => `${k}: ${v}`)].join("\n") + (p.body ? `\n\n${p.body}` : "");
      } catch (err) {
        pre.textContent = err.message;
      }
    });
    return el("section", { class: "card delivery", "data-destination": d.destination, "aria-label": `Delivery to ${d.destination}` },
      el("div", { class: "row" }, el("h2", {}, d.destination), state(d.state), replay, message),
      d.last_error ? el("p", { class: "notice" }, d.last_error) : null,
      table(["#", "At", "Result", "Latency", "Answer (first KiB)"], attemptRows(d.attempts), "No attempt yet."), request);
  });
  show(`Call ${e.call_id || "(no call id)"}`,
    el("dl", { class: "fields card" },
      el("dt", {}, "Event"), el("dd", { class: "mono" }, e.event_id),
      el("dt", {}, "Tenant / source"), el("dd", {}, `${e.tenant} / ${e.source}`),
      el("dt", {}, "Received"), el("dd", {}, e.received_at),
      normalized.map(([k, v]) => [el("dt", {}, k), el("dd", { class: "mono" }, String(v))])),
    el("p", { class: "row" }, el("a", { href: `#/calls${query({ call_id: e.call_id, tenant: e.tenant })}` }, "Every event of this call"),
      el("a", { href: `#/playground${query({ tenant: e.tenant, event_id: e.event_id })}` }, "Try a template on this event")),
    el("details", { class: "card" }, el("summary", {}, `Payload as received (${e.payload.content_type || "no content type"})`), el("pre", {}, payload)),
    el("h2", {}, "Deliveries"), deliveries.length ? deliveries : el("p", { class: "notice" }, "No delivery."));
  // While a delivery is under way, the page follows it.
  if (e.deliveries.some((d) => d.state === "pending")) {
    const here = location.hash;
    setTimeout(() => { if (location.hash === here && token) route(); }, 1000);
  }
}

function pretty(text) {
  try { return JSON.stringify(JSON.parse(text), null, 2); } catch { return text; }
}

// Deliveries by state: dead letters first, replayed one by one or all matching.
async function deliveries(params) {
  const filters = { state: params.get("state") || "dead", tenant: params.get("tenant") || "", destination: params.get("destination") || "" };
  const stateField = el("label", {}, "State", el("select", { name: "state" },
    ["dead", "pending", "delivered", "superseded", "expired", "cancelled"].map((s) => el("option", { value: s, selected: s === filters.state }, s))));
  const form = el("form", { class: "filters", "aria-label": "Filter deliveries" }, stateField,
    field("tenant", "Tenant", filters.tenant), field("destination", "Destination", filters.destination),
    el("button", { type: "submit" }, "Show"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    location.hash = `#/deliveries${query(Object.fromEntries(new FormData(form)))}`;
  });
  const progress = el("p", { class: "notice", role: "status" });
  const results = el("div", {});
  show("Deliveries", form, results, progress);
  let page;
  try {
    page = await api("GET", `/v1/deliveries${query({ ...filters, limit: "100" })}`);
  } catch (e) {
    return results.replaceChildren(failure(e));
  }
  const rows = page.deliveries.map((d) => el("tr", {},
    el("td", {}, el("input", { type: "checkbox", value: d.id, "aria-label": `Select delivery ${d.id}` })),
    el("td", {}, String(d.id)), el("td", {}, `${d.tenant}/${d.destination}`), el("td", {}, state(d.state)),
    el("td", {}, String(d.attempts)), el("td", {}, d.created_at),
    el("td", {}, d.last_error || ""), el("td", {}, el("a", { href: `#/events/${d.event_id}` }, "event"))));
  const finished = filters.state !== "pending";
  const selected = el("button", { type: "button", disabled: !finished }, "Replay selected");
  const all = el("button", { type: "button", class: "secondary", disabled: !finished }, "Replay all matching");
  selected.addEventListener("click", async () => {
    const ids = [...results.querySelectorAll("input[type=checkbox]:checked")].map((c) => c.value);
    let done = 0;
    for (const id of ids) {
      try { await api("POST", `/v1/deliveries/${id}/replay`); done++; } catch (e) { progress.textContent = e.message; }
      progress.textContent = `${done} of ${ids.length} queued again`;
    }
  });
  all.addEventListener("click", async () => {
    all.disabled = true;
    let total = 0;
    for (;;) {
      const answer = await api("POST", "/v1/replay", { state: filters.state, tenant: filters.tenant || undefined, destination: filters.destination || undefined, limit: 1000 });
      total += answer.queued;
      progress.textContent = `${total} queued again…`;
      if (answer.queued < 1000) break;
    }
    progress.textContent = `${total} queued again.`;
  });
  results.replaceChildren(
    table(["", "Id", "Destination", "State", "Attempts", "Created", "Last error", ""], rows, "No delivery in that state."),
    el("div", { class: "row" }, selected, all));
}

// A sparkline of one value per minute (null: no attempt that minute), as inline SVG.
function spark(values, label, max) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 120 24");
  svg.setAttribute("class", "spark");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", label);
  const top = max || Math.max(1, ...values.filter((v) => v !== null));
  values.forEach((v, i) => {
    if (v === null) return;
    const bar = document.createElementNS(ns, "rect");
    const h = Math.max(1, (v / top) * 22);
    bar.setAttribute("x", String(i * 2));
    bar.setAttribute("y", String(24 - h));
    bar.setAttribute("width", "1.6");
    bar.setAttribute("height", String(h));
    svg.append(bar);
  });
  return svg;
}

function age(seconds) {
  if (seconds === null || seconds === undefined) return "";
  if (seconds < 120) return `${seconds} s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)} min`;
  return `${Math.round(seconds / 3600)} h`;
}

// Destinations on this node: health over the last hour, queue, circuit, pause and resume.
async function destinations(params) {
  const tenant = params.get("tenant") || "";
  const form = el("form", { class: "filters", "aria-label": "Filter destinations" }, field("tenant", "Tenant", tenant), el("button", { type: "submit" }, "Show"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    location.hash = `#/destinations${query(Object.fromEntries(new FormData(form)))}`;
  });
  const cursor = params.get("cursor") || "";
  let page;
  try {
    page = await api("GET", `/v1/destinations${query({ tenant, health: "true", limit: "100", cursor })}`);
  } catch (e) {
    return show("Destinations", form, failure(e));
  }
  const rows = page.destinations.map((d) => {
    const [t, id] = d.destination.split("/");
    const toggle = el("button", { type: "button", class: "secondary" }, d.paused ? "Resume" : "Pause");
    toggle.addEventListener("click", async () => {
      toggle.disabled = true;
      try { await api("POST", `/v1/destinations/${t}/${id}/${d.paused ? "resume" : "pause"}`); } catch (e) { alert(e.message); }
      route();
    });
    const hour = d.last_hour || [];
    const attempts = hour.reduce((n, m) => n + m.attempts, 0);
    const succeeded = hour.reduce((n, m) => n + m.succeeded, 0);
    const rate = attempts ? `${Math.round((100 * succeeded) / attempts)}% of ${attempts}` : "no attempt";
    const mean = attempts ? hour.reduce((n, m) => n + m.mean_latency_ms * m.attempts, 0) / attempts : null;
    return el("tr", { "data-destination": d.destination }, el("td", {}, d.destination), el("td", {}, d.paused ? "paused" : "running"),
      el("td", {}, state(d.circuit)),
      el("td", { class: "health" }, rate, spark(hour.map((m) => (m.attempts ? (100 * m.succeeded) / m.attempts : null)), `success rate per minute, last hour: ${rate}`, 100)),
      el("td", { class: "health" }, mean === null ? "" : `${mean.toFixed(1)} ms`, spark(hour.map((m) => (m.attempts ? m.mean_latency_ms : null)), "mean latency per minute, last hour")),
      el("td", {}, el("a", { href: `#/deliveries${query({ tenant: t, destination: id, state: "pending" })}` }, `${d.pending} pending`), d.oldest_pending_seconds !== null ? ` (oldest ${age(d.oldest_pending_seconds)})` : ""),
      el("td", {}, toggle));
  });
  show("Destinations", form, table(["Destination", "Delivery", "Circuit", "Success, last hour", "Latency", "Queue", ""], rows, "No destination."),
    page.next_cursor ? el("a", { href: `#/destinations${query({ tenant, cursor: page.next_cursor })}` }, "Next page") : null);
}

// Tenants (admin): the list, and one tenant's sources and destinations edited over the
// control-plane API; the validator's errors shown under the part they point to.
async function tenants(params) {
  const cursor = params.get("cursor") || "";
  let page;
  try {
    page = await api("GET", `/v1/tenants${query({ limit: "100", cursor })}`);
  } catch (e) {
    return show("Tenants", failure(e));
  }
  const name = field("id", "New tenant id");
  const create = el("form", { class: "filters", "aria-label": "New tenant" }, name, el("button", { type: "submit" }, "Create"));
  create.addEventListener("submit", (event) => {
    event.preventDefault();
    const id = create.elements.id.value.trim();
    if (id) location.hash = `#/tenants/${encodeURIComponent(id)}`;
  });
  const rows = page.tenants.map((t) => el("tr", {}, el("td", {}, el("a", { href: `#/tenants/${encodeURIComponent(t.id)}` }, t.id)),
    el("td", {}, t.managed_by), el("td", {}, t.version === null ? "" : String(t.version)), el("td", {}, String(t.sources)), el("td", {}, String(t.destinations))));
  show("Tenants", create, table(["Tenant", "Managed by", "Version", "Sources", "Destinations"], rows, "No tenant yet."),
    page.next_cursor ? el("a", { href: `#/tenants${query({ cursor: page.next_cursor })}` }, "Next page") : null);
}

const META = ["id", "version", "managed_by", "updated_at", "secrets"];

async function tenantPage(id) {
  let doc = null;
  try {
    doc = await api("GET", `/v1/tenants/${encodeURIComponent(id)}`);
  } catch (e) {
    if (!(e instanceof ApiError && e.status === 404)) return show(`Tenant ${id}`, failure(e));
  }
  const readOnly = doc && doc.managed_by === "file";
  const version = doc ? doc.version : null;
  const parts = [];
  // One editor per source and destination, one for the rest: errors land under their part.
  const editor = (list, index, value) => {
    const area = el("textarea", { rows: Math.min(16, JSON.stringify(value, null, 2).split("\n").length + 1), spellcheck: "false", readonly: readOnly,
      "aria-label": list ? `${list} ${value.id || index + 1}` : "Other fields" });
    area.value = JSON.stringify(value, null, 2);
    const problems = el("ul", { class: "problems", "aria-live": "polite" });
    const prefix = list ? `/${list}/${index}` : "";
    parts.push({ list, area, problems, prefix });
    return el("section", { class: "card part", "data-pointer": prefix || "/" }, el("h2", {}, list ? `${list} ${value.id || ""}` : "Tenant"), area, problems);
  };
  const rest = {};
  for (const [k, v] of Object.entries(doc || {})) if (!META.includes(k) && k !== "source" && k !== "destination") rest[k] = v;
  const sections = [editor(null, 0, rest)];
  (doc?.source || [{ id: "telecmi", provider: "telecmi", auth: [{ scheme: "none" }] }]).forEach((v, i) => sections.push(editor("source", i, v)));
  (doc?.destination || [{ id: "crm", url: "https://example.com/calls/<<id>>" }]).forEach((v, i) => sections.push(editor("destination", i, v)));
  const status = el("p", { role: "status", class: "notice" });
  const save = el("button", { type: "button", hidden: readOnly }, doc ? "Save" : "Create");
  save.addEventListener("click", async () => {
    for (const p of parts) p.problems.replaceChildren();
    const body = { source: [], destination: [] };
    for (const p of parts) {
      let value;
      try { value = JSON.parse(p.area.value); } catch (e) { p.problems.append(el("li", { class: "error" }, `Not JSON: ${e.message}`)); return; }
      if (p.list) body[p.list].push(value); else Object.assign(body, value);
    }
    save.disabled = true;
    try {
      const headers = {};
      const answer = await fetch(`/v1/tenants/${encodeURIComponent(id)}`, {
        method: "PUT", body: JSON.stringify(body),
        headers: { authorization: `Bearer ${token}`, "content-type": "application/json", ...(version !== null ? { "if-match": String(version) } : headers) },
      });
      const value = await answer.json().catch(() => null);
      if (!answer.ok) throw new ApiError(answer.status, value);
      status.textContent = `Saved: version ${value.version}.`;
      setTimeout(route, 600);
    } catch (e) {
      status.textContent = e.message;
      for (const problem of (e.body && e.body.error && e.body.error.errors) || []) {
        const pointer = problem.pointer || "/";
        const part = parts.filter((p) => p.prefix && (pointer === p.prefix || pointer.startsWith(`${p.prefix}/`)))[0] || parts[0];
        const inner = pointer.slice(part.prefix.length) || "/";
        part.problems.append(el("li", { class: "error" }, el("code", {}, inner), problem.line ? ` line ${problem.line}, column ${problem.column}` : "", `: ${problem.message}`));
      }
    } finally {
      save.disabled = false;
    }
  });
  const secrets = el("section", { class: "card" }, el("h2", {}, "Secrets"),
    el("p", { class: "notice" }, doc && doc.secrets && doc.secrets.length ? `Set: ${doc.secrets.join(", ")} (values are never shown)` : "None set."));
  if (doc && !readOnly) {
    const form = el("form", { class: "filters", "aria-label": "Set a secret" }, field("name", "Secret name"), field("value", "Value", "", "password"), el("button", { type: "submit" }, "Set secret"));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      try {
        await api("PUT", `/v1/tenants/${encodeURIComponent(id)}/secrets/${encodeURIComponent(form.elements.name.value.trim())}`, { value: form.elements.value.value });
        form.elements.value.value = "";
        route();
      } catch (e) { status.textContent = e.message; }
    });
    secrets.append(form);
  }
  show(`Tenant ${id}`, readOnly ? el("p", { class: "notice" }, "Defined by a file under tenants_dir: read-only here.") : null,
    doc ? el("p", { class: "notice" }, `Version ${version ?? "—"}, managed by ${doc.managed_by}.`) : el("p", { class: "notice" }, "A new tenant."),
    sections, el("div", { class: "row" }, save, status), secrets);
}

// Live: events as they are committed and attempts as they finish (GET /v1/tail, server-sent
// events read with fetch, since EventSource cannot send the bearer header).
async function live(params) {
  const tenant = params.get("tenant") || "";
  const form = el("form", { class: "filters", "aria-label": "Filter the live tail" }, field("tenant", "Tenant", tenant), el("button", { type: "submit" }, "Watch"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    location.hash = `#/live${query(Object.fromEntries(new FormData(form)))}`;
  });
  const status = el("p", { class: "notice", role: "status" }, "Connecting…");
  const body = el("tbody", {});
  show("Live", form, status,
    el("table", {}, el("thead", {}, el("tr", {}, ["At", "Tenant", "What", ""].map((h) => el("th", { scope: "col" }, h)))), body));
  const here = location.hash;
  const controller = new AbortController();
  const leave = () => { if (location.hash !== here) { controller.abort(); window.removeEventListener("hashchange", leave); } };
  window.addEventListener("hashchange", leave);
  let response;
  try {
    response = await fetch(`/v1/tail${query({ tenant })}`, { headers: { authorization: `Bearer ${token}` }, signal: controller.signal });
  } catch { return; }
  if (!response.ok) {
    const value = await response.json().catch(() => null);
    return status.replaceWith(failure(new ApiError(response.status, value)));
  }
  status.textContent = "Watching: new events and attempts appear at the top.";
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    let chunk;
    try { chunk = await reader.read(); } catch { return; }
    if (chunk.done) { status.textContent = "The stream ended."; return; }
    buffer += decoder.decode(chunk.value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const kind = (frame.match(/^event: (.*)$/m) || [])[1];
      const data = (frame.match(/^data: (.*)$/m) || [])[1];
      if (!kind || !data) continue;
      const item = JSON.parse(data);
      if (kind === "lagged") { status.textContent = `Fell behind: ${item.missed} items skipped.`; continue; }
      const what = kind === "event"
        ? `call ${item.call_id || "(no call id)"} from ${item.source}`
        : `${item.destination}: ${item.result} in ${item.latency_ms.toFixed(1)} ms → ${item.next} (attempt ${item.attempt})`;
      body.prepend(el("tr", { class: `live-${kind}` }, el("td", {}, item.at), el("td", {}, item.tenant), el("td", {}, what),
        el("td", {}, el("a", { href: `#/events/${item.event_id}` }, "event"))));
      while (body.children.length > 200) body.lastChild.remove();
    }
  }
}

// The template playground: a destination (one of the tenant's, or one being written)
// rendered live against a stored event, a provider's documented callback, or a pasted body.
// Secrets show as ‹secret:NAME›.
async function playground(params) {
  const tenant = field("tenant", "Tenant", params.get("tenant") || "");
  const pick = el("select", { name: "pick", "aria-label": "Destination" }, el("option", { value: "" }, "(write one below)"));
  const source = el("select", { name: "payload", "aria-label": "Payload" },
    el("option", { value: "event" }, "a stored event"), el("option", { value: "fixture" }, "a provider's callback"),
    el("option", { value: "body" }, "a body I paste"));
  const eventId = field("event_id", "Event id", params.get("event_id") || "");
  const provider = field("provider", "Provider", "telecmi");
  const fixture = field("fixture", "Callback", "");
  const sourceId = field("source", "Source", "");
  const body = el("textarea", { name: "body", rows: 8, spellcheck: "false", "aria-label": "Payload body" });
  const destination = el("textarea", { name: "destination", rows: 14, spellcheck: "false", "aria-label": "Destination (JSON)" });
  destination.value = JSON.stringify({ id: "draft", url: "https://example.com/calls/<<id>>", body: "{\"call\": <<id>>, \"status\": <<status>>}" }, null, 2);
  const output = el("div", { class: "card", "aria-live": "polite" }, el("p", { class: "notice" }, "The rendered request shows here."));
  show("Template playground",
    el("form", { class: "filters", "aria-label": "Playground" }, tenant,
      el("label", {}, "Destination", pick), el("label", {}, "Payload", source), eventId, provider, fixture, sourceId),
    el("label", {}, "Destination (JSON, as in PUT /v1/tenants/{tenant}/destinations/{id})", destination),
    el("label", {}, "Body", body), el("h2", {}, "Request"), output);
  const input = (name) => main.querySelector(`[name=${name}]`);
  const visible = () => {
    const kind = source.value;
    eventId.hidden = kind !== "event";
    provider.hidden = fixture.hidden = kind !== "fixture";
    sourceId.hidden = body.parentElement.hidden = kind !== "body";
  };
  let timer = null;
  const render = async () => {
    const t = input("tenant").value.trim();
    if (!t) return;
    let draft;
    try { draft = JSON.parse(destination.value); } catch (e) {
      return output.replaceChildren(el("p", { class: "error" }, `The destination is not JSON: ${e.message}`));
    }
    const request = { destination: draft };
    if (source.value === "event") request.event_id = input("event_id").value.trim() || undefined;
    if (source.value === "fixture") { request.provider = input("provider").value.trim(); request.fixture = input("fixture").value.trim(); }
    if (source.value === "body") { request.body = body.value; request.source = input("source").value.trim() || undefined; }
    try {
      const p = await api("POST", `/v1/tenants/${encodeURIComponent(t)}/render`, request);
      const text = [`${p.method} ${p.url}`, ...p.headers.map(([k, v]) => `${k}: ${v}`)].join("\n") + (p.body ? `\n\n${p.body}` : "");
      output.replaceChildren(...p.notes.map((n) => el("p", { class: "notice" }, n)), el("pre", { class: "rendered" }, text));
    } catch (e) {
      const errors = (e.body && e.body.error && e.body.error.errors) || [];
      output.replaceChildren(el("p", { class: "error", role: "alert" }, e.message),
        el("ul", { class: "problems" }, errors.map((x) => el("li", {},
          el("code", {}, x.pointer || "/"), x.line ? ` line ${x.line}, column ${x.column}` : "", `: ${x.message}`))));
    }
  };
  const soon = () => { clearTimeout(timer); timer = setTimeout(render, 250); };
  const loadTenant = async () => {
    const t = input("tenant").value.trim();
    pick.replaceChildren(el("option", { value: "" }, "(write one below)"));
    if (!t) return;
    try {
      const doc = await api("GET", `/v1/tenants/${encodeURIComponent(t)}`);
      for (const d of doc.destination || []) pick.append(el("option", { value: JSON.stringify(d) }, d.id));
    } catch { /* a tenant being typed */ }
  };
  pick.addEventListener("change", () => { if (pick.value) destination.value = JSON.stringify(JSON.parse(pick.value), null, 2); soon(); });
  source.addEventListener("change", () => { visible(); soon(); });
  input("tenant").addEventListener("change", async () => { await loadTenant(); soon(); });
  main.addEventListener("input", soon);
  visible();
  if (params.get("event_id")) source.value = "event";
  await loadTenant();
  soon();
}

async function route() {
  if (!token && portalToken && !(await portalSignIn())) return;
  if (!token) return signIn();
  const [path, search] = location.hash.slice(1).split("?");
  const params = new URLSearchParams(search || "");
  const parts = path.split("/").filter(Boolean);
  for (const link of document.querySelectorAll("nav a")) {
    link.toggleAttribute("aria-current", link.getAttribute("href") === `#/${parts[0] || "calls"}`);
    if (link.hasAttribute("aria-current")) link.setAttribute("aria-current", "page");
  }
  try {
    if (parts[0] === "events" && parts[1]) return await event(parts[1]);
    if (parts[0] === "deliveries") return await deliveries(params);
    if (parts[0] === "destinations") return await destinations(params);
    if (parts[0] === "tenants" && parts[1]) return await tenantPage(decodeURIComponent(parts[1]));
    if (parts[0] === "tenants") return await tenants(params);
    if (parts[0] === "playground") return await playground(params);
    if (parts[0] === "live") return await live(params);
    return await calls(params);
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return signIn("Signed out: the token is no longer valid.");
    show("Error", failure(e));
  }
}

document.getElementById("sign-out").addEventListener("click", () => {
  location.hash = "#/";
  signIn();
});
window.addEventListener("hashchange", route);
route();
