// The dashboard: reads the query API and draws it. No build step, no dependency but plotly.js,
// which the API serves from the plotly package. A value that was not recorded is null in the
// API and stays a gap here: never drawn as 0.
"use strict";

const STATE_COLOURS = { measured: "#1b7f5b", reported: "#2f5fa7", modelled: "#9a6a00" };
const STATE_SYMBOLS = { measured: "circle", reported: "square", modelled: "diamond-open" };
const INDEXES = new Set(["fci", "dido", "pito"]);
const SERIES = {
  "chart-shares": {
    title: "Shares of the period (%)",
    names: ["local_input_share", "diversion_rate", "cmu", "fci"],
    type: "scatter",
    percent: true,
  },
  "chart-made": {
    title: "Things made and repaired",
    names: ["produced_count", "repaired_count"],
    type: "bar",
  },
  "chart-mass": { title: "Inputs and waste (kg)", names: ["input_kg", "waste_kg"], type: "bar" },
};
const LABELS = {
  local_input_share: "Local input share",
  diversion_rate: "Waste diverted",
  cmu: "Circular material use",
  fci: "Fab City Index",
  produced_count: "Made",
  repaired_count: "Repaired",
  input_kg: "Inputs",
  waste_kg: "Waste",
};
// No mode bar: on a small chart it covers the title, and a phone has no hover to hide it.
const PLOT_CONFIG = { displaylogo: false, responsive: true, displayModeBar: false };

const $ = (id) => document.getElementById(id);

// Where the API asks for keys, the page asks the person for a planner key once and keeps it in
// this browser only (localStorage), sent as a bearer token.
const KEY_STORE = "fabcity-api-key";

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

async function getJSON(path) {
  const headers = { accept: "application/json" };
  const key = localStorage.getItem(KEY_STORE);
  if (key) headers.authorization = `Bearer ${key}`;
  const response = await fetch(path, { headers });
  if (response.status === 401 || response.status === 403) {
    await askForKey(
      response.status === 401
        ? "This API needs a key: paste a planner key."
        : "This key may not read this city: paste another planner key.",
    );
    return getJSON(path);
  }
  if (!response.ok) {
    let detail = response.statusText;
    try {
      detail = (await response.json()).detail || detail;
    } catch (_) {
      // not a problem document: keep the status text
    }
    throw new Error(`${path}: ${detail}`);
  }
  return response.json();
}

// Every item of a paginated list, following next_cursor.
async function getAll(path) {
  const items = [];
  let cursor = null;
  do {
    const sep = path.includes("?") ? "&" : "?";
    const url = cursor ? `${path}${sep}cursor=${encodeURIComponent(cursor)}` : path;
    const page = await getJSON(url);
    items.push(...page.items);
    cursor = page.next_cursor;
  } while (cursor);
  return items;
}

function isoDate(d) {
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
}

function daysBefore(to, days) {
  const d = new Date(`${to}T12:00:00`);
  d.setDate(d.getDate() - (days - 1));
  return isoDate(d);
}

function formatValue(name, unit, value) {
  if (INDEXES.has(name)) return value.toFixed(3);
  if (unit === "ratio") return `${(value * 100).toFixed(1)} %`;
  if (unit === "count") return Math.round(value).toLocaleString("en");
  const digits = unit === "kg/person" ? 4 : 2;
  return `${value.toLocaleString("en", { maximumFractionDigits: digits })} ${unit}`;
}

function stateBadge(state) {
  const span = document.createElement("span");
  span.className = `state ${state || "missing"}`;
  span.textContent = state || "not recorded";
  return span;
}

function renderTiles(summary) {
  const tiles = $("tiles");
  tiles.replaceChildren();
  for (const f of summary.figures.filter((f) => f.headline)) {
    const tile = document.createElement("div");
    tile.className = "tile";
    tile.dataset.metric = f.name;
    tile.dataset.state = f.state || "";
    tile.dataset.value = f.value === null ? "" : String(f.value);
    const label = document.createElement("div");
    label.className = "label";
    label.textContent = f.label;
    const value = document.createElement("div");
    value.className = "value";
    const reason = document.createElement("div");
    reason.className = "reason";
    if (f.value !== null) {
      value.textContent = formatValue(f.name, f.unit, f.value);
    } else if (f.range) {
      // FCI without PITO: no single number, only the range it lies in.
      value.textContent = `${f.range[0].toFixed(2)} – ${f.range[1].toFixed(2)}`;
      reason.textContent = f.reason;
      tile.dataset.range = f.range.join(",");
    } else {
      tile.classList.add("missing");
      value.textContent = "not recorded";
      reason.textContent = f.reason || "";
    }
    tile.append(label, value, stateBadge(f.state), reason);
    tiles.append(tile);
  }
  const c = summary.coverage;
  $("coverage").textContent =
    `${summary.from} to ${summary.to} (${summary.timezone}): ${c.events.toLocaleString("en")} ` +
    `events from ${c.sites_reporting} of ${c.sites_active} sites.`;
}

function renderSeries(metrics) {
  const byName = Object.fromEntries(metrics.series.map((s) => [s.name, s]));
  for (const [id, chart] of Object.entries(SERIES)) {
    const traces = [];
    const missing = [];
    for (const name of chart.names) {
      const s = byName[name];
      if (!s) continue;
      const x = s.points.map((p) => p.start);
      // null stays null: plotly leaves a gap (lines) or no bar, never a 0.
      const y = s.points.map((p) => p.value);
      const states = s.points.map((p) => p.state || "not recorded");
      if (y.every((v) => v === null)) missing.push(LABELS[name] || name);
      traces.push({
        name: LABELS[name] || name,
        x,
        y,
        type: chart.type,
        mode: chart.type === "scatter" ? "lines+markers" : undefined,
        connectgaps: false,
        customdata: states,
        marker:
          chart.type === "scatter" ? { symbol: states.map((st) => STATE_SYMBOLS[st] || "x") } : {},
        hovertemplate: `%{y}${chart.percent ? "" : " " + s.unit} (%{customdata})<extra>%{fullData.name}</extra>`,
        meta: name,
      });
    }
    const layout = {
      title: { text: chart.title, font: { size: 14 } },
      margin: { t: 40, r: 10, b: 40, l: 50 },
      legend: { orientation: "h", y: -0.2 },
      barmode: "group",
      yaxis: chart.percent ? { tickformat: ".0%", rangemode: "tozero" } : { rangemode: "tozero" },
      annotations: missing.length
        ? [{
            text: `Not recorded: ${missing.join(", ")}`,
            xref: "paper", yref: "paper", x: 0, y: 1.08, showarrow: false,
            font: { size: 11, color: "#8a8f91" }, xanchor: "left",
          }]
        : [],
    };
    Plotly.react($(id), traces, layout, PLOT_CONFIG);
  }
}

function renderSankey(flows) {
  const index = Object.fromEntries(flows.nodes.map((n, i) => [n.id, i]));
  const colour = (state, alpha) => {
    const hex = STATE_COLOURS[state] || "#8a8f91";
    const [r, g, b] = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
    return `rgba(${r},${g},${b},${alpha})`;
  };
  // Columns left to right: where material came from (recovered material among the origins, so
  // the loop back from the city is one visible arc), category, the city, where it went.
  const column = (n) =>
    ({ origin: 0.01, recovered: 0.01, category: 0.33, city: 0.62 })[n.kind] ??
    (n.id === "stock:drawn" ? 0.01 : 0.99);
  const columns = flows.nodes.map(column);
  const rank = flows.nodes.map((n, i) => columns.slice(0, i).filter((x) => x === columns[i]).length);
  const sizes = flows.nodes.map((_, i) => columns.filter((x) => x === columns[i]).length);
  const trace = {
    type: "sankey",
    arrangement: "snap",
    valueformat: ",.2f",
    valuesuffix: " kg",
    node: {
      label: flows.nodes.map((n) => n.label),
      customdata: flows.nodes.map((n) => n.id),
      x: columns,
      y: rank.map((r, i) => (r + 0.5) / sizes[i]),
      pad: 14,
      thickness: 14,
      color: flows.nodes.map((n) => (n.kind === "stock" ? "#c9b27c" : "#7f9ba3")),
    },
    link: {
      source: flows.links.map((l) => index[l.source]),
      target: flows.links.map((l) => index[l.target]),
      value: flows.links.map((l) => l.value),
      customdata: flows.links.map((l) => l.state || "not recorded"),
      color: flows.links.map((l) => colour(l.state, 0.35)),
      hovertemplate: "%{source.label} → %{target.label}: %{value} (%{customdata})<extra></extra>",
    },
  };
  const layout = {
    margin: { t: 10, r: 10, b: 10, l: 10 },
    annotations: flows.links.length
      ? []
      : [{ text: "No material flows recorded in this period", showarrow: false,
           xref: "paper", yref: "paper", x: 0.5, y: 0.5, font: { color: "#8a8f91" } }],
  };
  Plotly.react($("chart-sankey"), flows.links.length ? [trace] : [], layout, PLOT_CONFIG);
  const notes = ["Links are coloured by state: green measured, blue reported, amber modelled."];
  if (flows.unweighed_count > 0) {
    notes.push(
      `${Math.round(flows.unweighed_count).toLocaleString("en")} things made or repaired ` +
        "have no known mass and are not in the diagram.",
    );
  }
  $("flows-note").textContent = notes.join(" ");
}

function cell(text, className) {
  const td = document.createElement("td");
  if (className) td.className = className;
  if (text instanceof Node) td.append(text);
  else td.textContent = text;
  return td;
}

function renderAccounts(summary) {
  const table = $("accounts");
  const columns = ["de", "imp", "exp", "dmc", "u"];
  const head = document.createElement("tr");
  for (const h of ["Category", "DE", "IMP", "EXP", "DMC", "U"]) {
    const th = document.createElement("th");
    th.textContent = h;
    head.append(th);
  }
  const rows = [head];
  for (const account of summary.accounts) {
    const tr = document.createElement("tr");
    tr.dataset.category = account.category;
    tr.append(cell(account.label));
    for (const key of columns) {
      const f = account[key];
      if (f.value === null) {
        tr.append(cell("not recorded", "num missing"));
      } else {
        const wrap = document.createElement("span");
        wrap.append(`${f.value.toLocaleString("en", { maximumFractionDigits: 2 })} `);
        wrap.append(stateBadge(f.state));
        const td = cell(wrap, "num");
        td.dataset.value = String(f.value);
        tr.append(td);
      }
    }
    rows.push(tr);
  }
  table.replaceChildren(...rows);
}

function status(device) {
  const span = document.createElement("span");
  if (device.online === true) {
    span.className = "online";
    span.textContent = "● online";
  } else if (device.online === false) {
    span.className = "offline";
    span.textContent = "○ offline";
  } else {
    span.className = "unknown";
    span.textContent = "unknown";
  }
  return span;
}

function renderDevices(sites, devices) {
  const table = $("devices");
  const head = document.createElement("tr");
  for (const h of ["Site", "Kind", "Device", "Status", "Last seen"]) {
    const th = document.createElement("th");
    th.textContent = h;
    head.append(th);
  }
  const rows = [head];
  for (const site of sites) {
    const own = devices.filter((d) => d.site === site.slug);
    const entries = own.length ? own : [null];
    for (const d of entries) {
      const tr = document.createElement("tr");
      tr.dataset.site = site.slug;
      tr.append(cell(site.name), cell(site.kind.replace("_", " ")));
      if (d === null) {
        tr.append(cell("reports by people", "unknown"), cell(""), cell(""));
      } else {
        tr.dataset.device = d.slug;
        tr.dataset.online = String(d.online);
        const seen = d.last_seen ? new Date(d.last_seen).toLocaleString() : "never";
        tr.append(cell(`${d.name} (${d.kind})`), cell(status(d)), cell(seen));
      }
      rows.push(tr);
    }
  }
  table.replaceChildren(...rows);
}

function query() {
  const p = new URLSearchParams({ from: $("from").value, to: $("to").value });
  return p.toString();
}

async function render() {
  const city = $("city").value;
  if (!city) return;
  const interval = $("interval").value;
  const q = query();
  history.replaceState(null, "", `?city=${encodeURIComponent(city)}&${q}&interval=${interval}`);
  $("csv-link").href = `/v1/cities/${city}/summary?${q}&format=csv`;
  $("ngsi-link").href = `/v1/cities/${city}/ngsi-ld?${q}&interval=${interval}`;
  $("status").textContent = "Loading…";
  document.body.dataset.ready = "false";
  const names = [...new Set(Object.values(SERIES).flatMap((c) => c.names))].join(",");
  try {
    const base = `/v1/cities/${encodeURIComponent(city)}`;
    const [summary, metrics, flows, sites, devices] = await Promise.all([
      getJSON(`${base}/summary?${q}`),
      getJSON(`${base}/metrics?${q}&interval=${interval}&names=${names}`),
      getJSON(`${base}/flows?${q}`),
      getAll(`${base}/sites?limit=500`),
      getAll(`${base}/devices?limit=500`),
    ]);
    $("city-name").textContent = summary.name;
    renderTiles(summary);
    renderSeries(metrics);
    renderSankey(flows);
    renderAccounts(summary);
    renderDevices(sites, devices);
    $("status").textContent = "";
  } catch (error) {
    $("status").textContent = `Could not load the figures: ${error.message}`;
  }
  document.body.dataset.ready = "true";
}

async function start() {
  const params = new URLSearchParams(location.search);
  const cities = await getAll("/v1/cities?limit=500");
  const select = $("city");
  for (const c of cities) select.add(new Option(c.name, c.slug));
  if (!cities.length) {
    $("status").textContent = "No city is registered yet: POST /v1/cities first.";
    document.body.dataset.ready = "true";
    return;
  }
  const wanted = params.get("city");
  select.value = cities.some((c) => c.slug === wanted) ? wanted : cities[0].slug;
  const to = params.get("to") || isoDate(new Date());
  $("to").value = to;
  $("from").value = params.get("from") || daysBefore(to, 30);
  $("interval").value = params.get("interval") || "day";
  for (const el of [select, $("from"), $("to"), $("interval")]) {
    el.addEventListener("change", render);
  }
  for (const button of document.querySelectorAll(".presets button")) {
    button.addEventListener("click", () => {
      const days = Number(button.dataset.days);
      $("to").value = isoDate(new Date());
      $("from").value = daysBefore($("to").value, days);
      $("interval").value = days > 120 ? "month" : days > 45 ? "week" : "day";
      render();
    });
  }
  await render();
}

start().catch((error) => {
  $("status").textContent = `Could not start: ${error.message}`;
  document.body.dataset.ready = "true";
});
