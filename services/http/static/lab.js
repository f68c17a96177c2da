// The lab's page: forms that post CloudEvents to POST /v1/events with the lab's site key, a
// spreadsheet upload (POST /v1/events/import), and the list of what this page logged, each
// correctable. No build step, no dependency.
"use strict";

const $ = (id) => document.getElementById(id);
const KEY_STORE = "fabcity-lab-key";
const SENT_STORE = "fabcity-lab-sent";
const FATES = ["recycle", "reuse", "compost", "energy", "incineration", "landfill"];
const RINGS = [
  ["site", "made at this site"],
  ["city", "from the city"],
  ["region", "from the region"],
  ["beyond", "from further away"],
];
const here = { city: null, site: null };

function askForKey(message) {
  const form = $("key-form");
  form.hidden = false;
  $("key-message").textContent = message;
  return new Promise((resolve) => {
    form.onsubmit = (e) => {
      e.preventDefault();
      localStorage.setItem(KEY_STORE, $("key").value.trim());
      form.hidden = true;
      resolve();
    };
  });
}

function headers(extra = {}) {
  const out = { accept: "application/json", ...extra };
  const key = localStorage.getItem(KEY_STORE);
  if (key) out.authorization = `Bearer ${key}`;
  return out;
}

async function problemText(response) {
  try {
    const body = await response.json();
    return body.detail || body.title || response.statusText;
  } catch (_) {
    return response.statusText;
  }
}

async function call(method, path, body, contentType) {
  const init = { method, headers: headers(contentType ? { "content-type": contentType } : {}) };
  if (body !== undefined) init.body = body;
  const response = await fetch(path, init);
  if (response.status === 401) {
    await askForKey("This API needs a key: paste your lab's key (a site key).");
    return call(method, path, body, contentType);
  }
  return response;
}

async function getJSON(path) {
  const response = await call("GET", path);
  if (!response.ok) throw new Error(`${path}: ${await problemText(response)}`);
  return response.json();
}

function say(text, bad = false) {
  $("status").textContent = text;
  $("status").className = bad ? "bad" : "";
}

// Ids: random, so an entry posted twice (a double tap) is stored once under the first id.
function newId() {
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes); // unlike randomUUID, also on plain http from a phone
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function options(select, items) {
  select.replaceChildren(
    ...items.map(([value, text]) => {
      const o = document.createElement("option");
      o.value = value;
      o.textContent = text;
      return o;
    }),
  );
}

function nowLocal() {
  const d = new Date();
  d.setMinutes(d.getMinutes() - d.getTimezoneOffset());
  return d.toISOString().slice(0, 16);
}

// --- building the events -------------------------------------------------------------------

function num(form, name) {
  const v = form.elements[name] && form.elements[name].value;
  return v === "" || v === undefined ? null : Number(v);
}

function text(form, name) {
  const v = form.elements[name] && form.elements[name].value.trim();
  return v ? v : null;
}

function flow(action, resource, quantity, unit, ring, extra = {}) {
  const out = { action, resource, quantity, unit, ring };
  for (const [k, v] of Object.entries(extra)) if (v !== null && v !== undefined && v !== false) out[k] = v;
  return out;
}

function jobFlows(form) {
  const job = `job-${newId().slice(0, 12)}`;
  const flows = [];
  let first = null;
  for (const row of form.querySelectorAll(".material .row")) {
    const q = row.querySelector("[name=m_qty]").value;
    if (q === "") continue;
    const resource = row.querySelector("[name=m_resource]").value;
    first = first || resource;
    flows.push(
      flow("consume", resource, Number(q), row.querySelector("[name=m_unit]").value,
        row.querySelector("[name=m_ring]").value, {
          recycled: row.querySelector("[name=m_recycled]").checked || null,
          material: row.querySelector("[name=m_material]").value.trim() || null,
          job,
        }),
    );
  }
  flows.push(flow("produce", "part", num(form, "count"), "count", "city", { design: text(form, "design"), job }));
  const hours = num(form, "hours");
  if (hours) flows.push(flow("use", "machine_hours", hours, "h", "site", { job }));
  const waste = num(form, "waste_qty");
  if (waste) {
    if (!first) throw new Error("say which material the offcuts are of: add it under materials used");
    flows.push(flow("discard", first, waste, form.elements.waste_unit.value, "city", { fate: form.elements.waste_fate.value, job }));
  }
  return flows;
}

const BUILD = {
  job: jobFlows,
  repair: (f) => [flow("modify", f.elements.resource.value, num(f, "count"), "count", "city", { design: text(f, "design") })],
  waste: (f) => [flow("discard", f.elements.resource.value, num(f, "quantity"), f.elements.unit.value, "city", { fate: f.elements.fate.value })],
  received: (f) => [
    flow("consume", f.elements.resource.value, num(f, "quantity"), f.elements.unit.value, f.elements.ring.value, {
      recycled: f.elements.recycled.checked || null,
      material: text(f, "material"),
    }),
  ],
};

function sourceOf(form) {
  const device = form.elements.device && form.elements.device.value;
  return `/${here.city}/${here.site}${device ? `/${device}` : ""}`;
}

async function postEvent(event) {
  const response = await call("POST", "/v1/events", JSON.stringify(event), "application/cloudevents+json");
  if (response.status !== 202) throw new Error(await problemText(response));
  return response.json();
}

async function submitEntry(e) {
  e.preventDefault();
  const form = e.target;
  if (!here.city || !here.site) {
    say("Say which city and site first (above).", true);
    return;
  }
  try {
    const event = {
      specversion: "1.0",
      id: newId(),
      source: sourceOf(form),
      type: "fabcity.flow",
      time: new Date(form.elements.time.value).toISOString(),
      data: BUILD[form.dataset.kind](form),
    };
    const result = await postEvent(event);
    remember({ ...event, kind: form.dataset.kind, duplicate: result.duplicates > 0 });
    say(`Logged: ${summary(event)}.`);
    form.reset();
    form.elements.time.value = nowLocal();
  } catch (err) {
    say(`Not logged: ${err.message}`, true);
  }
}

// --- what this page logged, and corrections -----------------------------------------------

function sent() {
  try {
    return JSON.parse(localStorage.getItem(SENT_STORE) || "[]");
  } catch (_) {
    return [];
  }
}

function remember(event) {
  const list = [event, ...sent().filter((s) => s.id !== event.id)].slice(0, 50);
  localStorage.setItem(SENT_STORE, JSON.stringify(list));
  renderSent();
}

function summary(event) {
  return event.data
    .map((f) => `${f.action} ${f.quantity} ${f.unit} ${f.resource}${f.fate ? ` (${f.fate})` : ""}`)
    .join(", ");
}

function renderSent() {
  const list = $("sent");
  list.replaceChildren(
    ...sent().map((event) => {
      const li = document.createElement("li");
      li.dataset.id = event.id;
      if (event.retracted) li.className = "retracted";
      const when = new Date(event.time).toLocaleString();
      li.textContent = `${when} · ${event.kind} · ${summary(event)}`;
      if (!event.retracted && !event.replacedBy) li.append(fixControls(event));
      if (event.replacedBy) li.append(` → corrected`);
      return li;
    }),
  );
}

function fixControls(event) {
  const box = document.createElement("div");
  box.className = "fix";
  const retract = document.createElement("button");
  retract.type = "button";
  retract.textContent = "Withdraw";
  retract.onclick = () => correct(event, null);
  box.append(retract);
  // A quantity slip: the same flows with the quantities put right.
  event.data.forEach((f, i) => {
    const input = document.createElement("input");
    input.type = "number";
    input.step = "any";
    input.min = "0";
    input.value = f.quantity;
    input.setAttribute("aria-label", `${f.action} ${f.resource} quantity`);
    input.dataset.index = i;
    box.append(input);
  });
  const fix = document.createElement("button");
  fix.type = "button";
  fix.textContent = "Correct the quantities";
  fix.onclick = () => {
    const data = event.data.map((f, i) => ({ ...f, quantity: Number(box.querySelector(`[data-index="${i}"]`).value) }));
    correct(event, data);
  };
  box.append(fix);
  return box;
}

// A correction is an event of its own that names the one it corrects: a retraction
// (`fabcity.event.retracted`, the event's id in its data) or a replacement (its flows, with
// the extension attribute `supersedes`). History stays as it was sent.
async function correct(event, data) {
  // A correction of a correction is refused: the newest correction of the original counts,
  // so a replacement is put right by correcting the original again.
  const target = event.original || event.id;
  const correction = data
    ? { specversion: "1.0", id: newId(), source: event.source, type: "fabcity.flow", time: event.time, supersedes: target, data }
    : {
        specversion: "1.0",
        id: newId(),
        source: event.source,
        type: "fabcity.event.retracted",
        time: event.time,
        data: { id: target, reason: "withdrawn from the lab's page" },
      };
  try {
    await postEvent(correction);
    const list = sent().map((s) =>
      s.id === event.id ? { ...s, retracted: !data, replacedBy: data ? correction.id : undefined } : s,
    );
    localStorage.setItem(SENT_STORE, JSON.stringify(list));
    if (data) remember({ ...correction, kind: event.kind, original: target });
    renderSent();
    say(data ? "Corrected: the figures follow the new quantities." : "Withdrawn: it counts no more.");
  } catch (err) {
    say(`Not corrected: ${err.message}`, true);
  }
}

// --- the spreadsheet -----------------------------------------------------------------------

async function submitSheet(e) {
  e.preventDefault();
  const file = e.target.elements.file.files[0];
  if (!file) return;
  if (!here.city) {
    say("Say which city first (above).", true);
    return;
  }
  const xlsx = file.name.toLowerCase().endsWith(".xlsx");
  const type = xlsx ? "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet" : "text/csv";
  const response = await call("POST", `/v1/events/import?city=${encodeURIComponent(here.city)}`, await file.arrayBuffer(), type);
  let body = {};
  try {
    body = await response.json();
  } catch (_) {
    // not JSON: the status says it
  }
  const rows = body.rows || [];
  const table = $("sheet-report");
  table.hidden = rows.length === 0;
  table.tBodies[0].replaceChildren(
    ...rows.map((r) => {
      const tr = document.createElement("tr");
      tr.className = r.outcome;
      for (const cell of [r.row, r.outcome, r.reason || ""]) {
        const td = document.createElement("td");
        td.textContent = cell;
        tr.append(td);
      }
      return tr;
    }),
  );
  if (response.status === 202) {
    say(`${body.accepted} rows stored, ${body.duplicates} stored before, ${body.refused} refused.`, body.refused > 0);
  } else {
    say(`Not imported: ${body.detail || response.statusText}`, true);
  }
}

// --- start ---------------------------------------------------------------------------------

function showTab(name) {
  for (const b of document.querySelectorAll(".tabs button")) b.setAttribute("aria-pressed", String(b.dataset.tab === name));
  for (const f of document.querySelectorAll("form.entry")) f.hidden = f.id !== name;
}

function materialRow(resources) {
  const row = document.createElement("div");
  row.className = "row";
  row.innerHTML = `
    <label>Material <select name="m_resource"></select></label>
    <label>Quantity <input type="number" name="m_qty" min="0" step="any"></label>
    <label>Unit <select name="m_unit"><option value="kg">kg</option><option value="g">g</option></select></label>
    <label>From <select name="m_ring"></select></label>
    <label>Kind <input name="m_material" maxlength="64" placeholder="PLA, birch plywood…"></label>
    <label class="check"><input type="checkbox" name="m_recycled"> recycled</label>`;
  options(row.querySelector("[name=m_resource]"), resources);
  options(row.querySelector("[name=m_ring]"), RINGS);
  return row;
}

async function start() {
  const params = new URLSearchParams(location.search);
  let me = { role: "admin" };
  const response = await call("GET", "/v1/whoami");
  if (response.ok) me = await response.json();
  if (me.role === "planner") {
    await askForKey("A planner key reads the city's figures; logging needs your lab's key (a site key).");
    return start();
  }
  here.city = me.city || params.get("city") || localStorage.getItem("fabcity-lab-city");
  here.site = me.site || params.get("site") || localStorage.getItem("fabcity-lab-site");
  if (!me.site) {
    // An admin key (or the embedded default, keys off) may write for any site: ask which.
    const place = $("place");
    place.hidden = false;
    $("city").value = here.city || "";
    $("site").value = here.site || "";
    place.oninput = () => {
      here.city = $("city").value.trim();
      here.site = $("site").value.trim();
      localStorage.setItem("fabcity-lab-city", here.city);
      localStorage.setItem("fabcity-lab-site", here.site);
      $("where").textContent = `${here.city} / ${here.site}`;
    };
  }
  $("where").textContent = here.city ? `${here.city} / ${here.site}` : "your lab";

  const resources = (await getJSON("/v1/resources?limit=1000")).items;
  const masses = resources.filter((r) => r.dimension === "mass").map((r) => [r.name, r.name]);
  const counts = resources.filter((r) => r.dimension === "count" && r.name !== "design").map((r) => [r.name, r.name]);
  for (const s of document.querySelectorAll("select.masses")) options(s, masses);
  for (const s of document.querySelectorAll("select.counts")) options(s, counts);
  for (const s of document.querySelectorAll("select.fates")) options(s, FATES.map((f) => [f, f]));
  for (const s of document.querySelectorAll("select.rings")) options(s, RINGS);
  const box = document.querySelector("#job .material");
  box.append(materialRow(masses));
  document.querySelector("#job .add-material").onclick = () => box.append(materialRow(masses));
  if (here.city && here.site) {
    try {
      const devices = await getJSON(`/v1/cities/${here.city}/sites/${here.site}/devices?limit=1000`);
      options(document.querySelector("#job [name=device]"), [
        ["", "none, or not listed"],
        ...devices.items.map((d) => [d.slug, d.name || d.slug]),
      ]);
    } catch (err) {
      say(`This site's machines could not be listed: ${err.message}`, true);
    }
  }
  for (const f of document.querySelectorAll("form.entry[data-kind]")) {
    f.elements.time.value = nowLocal();
    f.onsubmit = submitEntry;
  }
  $("sheet").onsubmit = submitSheet;
  for (const b of document.querySelectorAll(".tabs button")) b.onclick = () => showTab(b.dataset.tab);
  renderSent();
  document.body.dataset.ready = "true";
}

start().catch((err) => say(err.message, true));
