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

function signedIn(label) {
  for (const id of ["nav", "who", "sign-out"]) document.getElementById(id).hidden = false;
  document.getElementById("sign-out").hidden = portal;
  document.getElementById("who").textContent = label;
}

// The portal signs in with its token, once; an expired or forged one sees nothing.
async function portalSignIn() {
  token = portalToken;
  portalToken = null;
  try {
    await api("GET", "/v1/destinations");
  } catch (e) {
    token = null;
    main.replaceChildren(el("p", { class: "error", role: "alert" }, "This portal link has expired or is not valid."));
    return false;
  }
  signedIn("Your deliveries");
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
    el("button", { type: "submit" }, "Sign in"), error);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    token = form.elements.token.value.trim();
    try {
      await api("GET", "/v1/destinations");
    } catch (e) {
      token = null;
      error.textContent = e.status === 401 ? "That token is not valid." : e.message;
      return;
    }
    signedIn(`Signed in: ${/^sbk_/.test(token) ? "tenant key" : "admin"}`);
    if (!location.hash || location.hash === "#/") location.hash = "#/calls";
    route();
  });
  main.replaceChildren(el("div", { class: "signin card" }, el("h1", {}, "Switchboard console"), form));
  form.elements.token.focus();
}

// Calls: events by call id, tenant, source and time, newest first.
async function calls(params) {
  const form = el("form", { class: "filters", role: "search", "aria-label": "Find a call" },
    field("call_id", "Call id", params.get("call_id") || ""),
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
  const filters = Object.fromEntries(["call_id", "tenant", "source", "since", "until"].map((k) => [k, params.get(k)]));
  let cursor = null;
  const body = el("tbody", {});
  const more = el("button", { type: "button", class: "secondary", hidden: true }, "More");
  const load = async () => {
    try {
      const page = await api("GET", `/v1/events${query({ ...filters, limit: "50", cursor })}`);
      for (const e of page.events) {
        body.append(el("tr", {},
          el("td", {}, e.received_at),
          el("td", {}, e.tenant), el("td", {}, e.source),
          el("td", { class: "mono" }, el("a", { href: `#/events/${e.event_id}` }, e.call_id || "(no call id)")),
          el("td", { class: "mono" }, e.event_id)));
      }
      cursor = page.next_cursor;
      more.hidden = !cursor;
      if (body.children.length === 0) results.replaceChildren(el("p", { class: "notice" }, "No event matches."));
    } catch (e) {
      results.replaceChildren(failure(e));
    }
  };
  more.addEventListener("click", load);
  results.replaceChildren(el("table", {}, el("thead", {}, el("tr", {}, ["Received", "Tenant", "Source", "Call", "Event"].map((h) => el("th", { scope: "col" }, h)))), body), more);
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
    return el("section", { class: "card delivery", "data-destination": d.destination, "aria-label": `Delivery to ${d.destination}` },
      el("div", { class: "row" }, el("h2", {}, d.destination), state(d.state), replay, message),
      d.last_error ? el("p", { class: "notice" }, d.last_error) : null,
      table(["#", "At", "Result", "Latency", "Answer (first KiB)"], attemptRows(d.attempts), "No attempt yet."));
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

// Destinations on this node: pause, circuit state, pause and resume.
async function destinations() {
  let list;
  try {
    list = (await api("GET", "/v1/destinations")).destinations;
  } catch (e) {
    return show("Destinations", failure(e));
  }
  const rows = list.map((d) => {
    const [tenant, id] = d.destination.split("/");
    const toggle = el("button", { type: "button", class: "secondary" }, d.paused ? "Resume" : "Pause");
    toggle.addEventListener("click", async () => {
      toggle.disabled = true;
      try { await api("POST", `/v1/destinations/${tenant}/${id}/${d.paused ? "resume" : "pause"}`); } catch (e) { alert(e.message); }
      route();
    });
    return el("tr", { "data-destination": d.destination }, el("td", {}, d.destination), el("td", {}, d.paused ? "paused" : "running"),
      el("td", {}, state(d.circuit)),
      el("td", {}, el("a", { href: `#/deliveries${query({ tenant, destination: id, state: "pending" })}` }, "pending")), el("td", {}, toggle));
  });
  show("Destinations", table(["Destination", "Delivery", "Circuit", "Queue", ""], rows, "No destination."));
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
    if (parts[0] === "destinations") return await destinations();
    if (parts[0] === "playground") return await playground(params);
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
