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
// Each metric's plain name, from GET /v1/definitions (fabcity.read.definitions), so that the
// page says what the explanation page says: filled in by start().
const DEFINITIONS = {};
const title = (name) => DEFINITIONS[name]?.title || name;
// No mode bar: on a small chart it covers the title, and a phone has no hover to hide it. Each
// chart has its own CSV and PNG buttons under it instead (PNG through Plotly.downloadImage).
const PLOT_CONFIG = { displaylogo: false, responsive: true, displayModeBar: false };
// Metrics that add up over windows: a breakdown's period total is their sum. A share or an
// index does not add up: no total is made up for it.
const ADDITIVE_UNITS = new Set(["kg", "count", "kWh", "h"]);

const $ = (id) => document.getElementById(id);

// A link to the metric's explanation: every tile, series and column header has one.
function explainLink(name, text) {
  const a = document.createElement("a");
  a.href = `/explain#${encodeURIComponent(name)}`;
  a.className = "explain";
  a.dataset.metric = name;
  a.textContent = text ?? title(name);
  a.title = `What ${title(name)} means`;
  return a;
}

// Where the API asks for keys, the page asks the person for a planner key once and keeps it in
// this browser only (localStorage), sent as a bearer token.
const KEY_STORE = "fabcity-api-key";

// One question at a time: requests refused together (401) all wait for the same answer.
let asking = null;

function askForKey(message) {
  if (asking) return asking;
  const form = $("key-form");
  form.hidden = false;
  $("key-message").textContent = message;
  asking = new Promise((resolve) => {
    form.onsubmit = (e) => {
      e.preventDefault();
      localStorage.setItem(KEY_STORE, $("key").value.trim());
      form.hidden = true;
      asking = null;
      resolve();
    };
  });
  return asking;
}

function withKey(headers) {
  const key = localStorage.getItem(KEY_STORE);
  if (key) headers.authorization = `Bearer ${key}`;
  return headers;
}

// What the key in use may read, said when the API refuses (403): never asked again and again.
async function whatTheKeyReads() {
  try {
    const headers = withKey({ accept: "application/json" });
    const response = await fetch("/v1/whoami", { headers });
    if (!response.ok) return "";
    const who = await response.json();
    if (who.role === "admin") return "This is an admin key: it reads every city.";
    if (who.role === "planner") {
      return who.city
        ? `This planner key reads city ${who.city} only.`
        : "This planner key reads every city.";
    }
    return `This is a ${who.role} key: it logs a lab's work (on /lab), ` +
      "and reads no city's figures.";
  } catch (_) {
    return "";
  }
}

class Refused extends Error {}

// 401: no key or a key the API does not know: ask the person (and wait for them). 403: the key
// is good but may not read this: say what it may read, and stop; the Key… button changes it.
async function send(path, options = {}) {
  const response = await fetch(path, {
    ...options,
    headers: withKey({ accept: "application/json", ...(options.headers || {}) }),
  });
  if (response.status === 401) {
    await askForKey("This API needs a key: paste a planner key.");
    return send(path, options);
  }
  if (response.status === 403) {
    let detail = "this key may not do this";
    try {
      detail = (await response.json()).detail || detail;
    } catch (_) {
      // not a problem document
    }
    const reads = await whatTheKeyReads();
    throw new Refused(`${detail}. ${reads}`.trim());
  }
  return response;
}

async function getJSON(path) {
  const response = await send(path);
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

// How far a figure can be trusted (METRICS.md): low, medium or high; none when not recorded.
function confidenceBadge(confidence, short = false) {
  const span = document.createElement("span");
  span.className = `confidence ${confidence || "none"}`;
  span.textContent = confidence ? (short ? confidence : `${confidence} confidence`) : "";
  span.title =
    "low: the period is not over, fewer than 10 events, or fewer than half of the sites " +
    "reported; high: over, 30 events or more, 80 % of the sites, every term recorded";
  return span;
}

function formatRange(name, unit, range) {
  return `${formatValue(name, unit, range[0])} – ${formatValue(name, unit, range[1])}`;
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
    tile.dataset.confidence = f.confidence || "";
    tile.dataset.range = f.range ? f.range.join(",") : "";
    tile.dataset.partial = String(summary.partial);
    if (summary.partial) tile.classList.add("partial");
    const label = document.createElement("div");
    label.className = "label";
    // The definitions' title: "Labs' material consumption per person", not the official name.
    label.append(explainLink(f.name, DEFINITIONS[f.name]?.title || f.label));
    const value = document.createElement("div");
    value.className = "value";
    const reason = document.createElement("div");
    reason.className = "reason";
    if (f.value !== null) {
      value.textContent = formatValue(f.name, f.unit, f.value);
      if (f.range) {
        // DIDO or FCI with terms not recorded: the number, and the range absence allows.
        reason.textContent = `range ${formatRange(f.name, f.unit, f.range)}: ` +
          "not every term is recorded";
        reason.title = `terms used: ${(f.terms || []).join(", ")}`;
      }
    } else if (f.range) {
      // FCI without PITO: no single number, only the range it lies in.
      value.textContent = formatRange(f.name, f.unit, f.range);
      reason.textContent = f.reason;
    } else {
      tile.classList.add("missing");
      value.textContent = "not recorded";
      reason.textContent = f.reason || "";
    }
    const badges = document.createElement("div");
    badges.className = "badges";
    badges.append(stateBadge(f.state), " ", confidenceBadge(f.confidence));
    tile.append(label, value, badges, reason);
    tiles.append(tile);
  }
  const c = summary.coverage;
  $("coverage").textContent =
    `${summary.from} to ${summary.to} (${summary.timezone}): ${c.events.toLocaleString("en")} ` +
    `events from ${c.sites_reporting} of ${c.sites_active} sites.` +
    (summary.partial ? " The period is not over yet: its figures are partial." : "");
}

// A window not over yet is drawn apart: a hollow marker with a dot (a modelled value's own
// marker is hollow already), a hatched and paler bar.
function partialSymbol(symbol) {
  return `${symbol.replace(/-open$/, "")}-open-dot`;
}

// The latest window's value of a series: the last one recorded.
function latest(series) {
  const points = (series?.points || []).filter((p) => p.value !== null);
  return points.length ? points[points.length - 1] : null;
}

// How far the latest value is from the target: positive when short of it, 0 or less when met.
function gap(target, value) {
  return target.direction === "at_least" ? target.value - value : value - target.value;
}

function formatGap(target, amount) {
  const unit = target.unit;
  if (unit === "ratio" && !INDEXES.has(target.metric)) {
    return `${(Math.abs(amount) * 100).toFixed(1)} points`;
  }
  return formatValue(target.metric, unit, Math.abs(amount));
}

function targetText(target) {
  const sign = target.direction === "at_least" ? "≥" : "≤";
  return `${sign} ${formatValue(target.metric, target.unit, target.value)} by ${target.due}`;
}

// "short by 10.0 points", "met (2.0 points to spare)", or "no value recorded in this period".
function gapText(target, series) {
  const now = latest(series);
  if (!now) return "no value recorded in this period";
  const amount = gap(target, now.value);
  if (amount > 0) return `short by ${formatGap(target, amount)}`;
  return amount === 0 ? "met, exactly" : `met (${formatGap(target, amount)} to spare)`;
}

function explains(id, names) {
  const chart = $(id);
  let p = chart.parentElement.querySelector("p.explains");
  if (!p) {
    p = document.createElement("p");
    p.className = "explains note";
    chart.after(p);
  }
  p.replaceChildren("What these mean: ");
  names.forEach((name, i) => p.append(...(i ? [", "] : []), explainLink(name)));
}

function renderSeries(metrics, targets) {
  const byName = Object.fromEntries(
    metrics.series.filter((s) => s.key === null || s.key === undefined).map((s) => [s.name, s]),
  );
  const charted = new Set(Object.values(SERIES).flatMap((c) => c.names));
  const charts = { ...SERIES };
  // A target whose metric has no chart of its own gets one, in the targets section.
  const box = $("target-charts");
  const wanted = targets
    .filter((t) => !charted.has(t.metric))
    .map((t) => `chart-target-${t.metric}`);
  for (const card of [...box.children]) {
    if (wanted.includes(card.firstChild?.id)) continue;
    Plotly.purge(card.firstChild);
    card.remove();
  }
  for (const t of targets.filter((t) => !charted.has(t.metric))) {
    const id = `chart-target-${t.metric}`;
    if (!$(id)) {
      const card = document.createElement("div");
      card.className = "card";
      const div = document.createElement("div");
      div.className = "chart";
      div.id = id;
      card.append(div);
      box.append(card);
    }
    const unit = byName[t.metric]?.unit || t.unit;
    charts[id] = {
      title: title(t.metric),
      names: [t.metric],
      type: ADDITIVE_UNITS.has(unit) ? "bar" : "scatter",
      percent: unit === "ratio" && !INDEXES.has(t.metric),
    };
  }
  for (const [id, chart] of Object.entries(charts)) {
    drawSeries(id, chart, byName, targets.filter((t) => chart.names.includes(t.metric)));
    explains(id, chart.names);
    addTools(id);
  }
}

function drawSeries(id, chart, byName, targets) {
  const traces = [];
  const missing = [];
  let partial = false;
  let ranged = false;
  for (const name of chart.names) {
    const s = byName[name];
    if (!s) continue;
    const x = s.points.map((p) => p.start);
    // null stays null: plotly leaves a gap (lines) or no bar, never a 0.
    const y = s.points.map((p) => p.value);
    const states = s.points.map((p) => p.state || "not recorded");
    const partials = s.points.map((p) => p.partial === true);
    const trust = s.points.map((p) =>
      p.confidence ? `${p.confidence} confidence` : "not recorded");
    const scatter = chart.type === "scatter";
    partial = partial || partials.some(Boolean);
    if (y.every((v) => v === null) && s.points.every((p) => !p.range)) {
      missing.push(title(name));
    }
    traces.push({
      name: title(name),
      x,
      y,
      type: chart.type,
      mode: scatter ? "lines+markers" : undefined,
      connectgaps: false,
      customdata: states,
      text: trust.map((t, i) => (partials[i] ? `${t}, period not over` : t)),
      textposition: "none", // for the hover only, never written on a bar
      marker: scatter
        ? {
            symbol: states.map((st, i) => {
              const symbol = STATE_SYMBOLS[st] || "x";
              return partials[i] ? partialSymbol(symbol) : symbol;
            }),
            size: partials.map((p) => (p ? 10 : 7)),
          }
        : {
            opacity: partials.map((p) => (p ? 0.45 : 1)),
            pattern: { shape: partials.map((p) => (p ? "/" : "")) },
          },
      hovertemplate: `%{y}${chart.percent ? "" : " " + s.unit} (%{customdata}, %{text})<extra>%{fullData.name}</extra>`,
      meta: name,
    });
    // Where a value has a range (DIDO, FCI with terms not recorded), a bar from its low to
    // its high end: where FCI has no single number, the range is all there is to draw.
    const spans = s.points.filter((p) => p.range);
    if (spans.length) {
      ranged = true;
      traces.push({
        name: `${title(name)}: range`,
        x: spans.flatMap((p) => [p.start, p.start, null]),
        y: spans.flatMap((p) => [p.range[0], p.range[1], null]),
        type: "scatter",
        mode: "lines",
        line: { width: 7, color: "rgba(154,106,0,0.3)" },
        hoverinfo: "skip",
        meta: `${name}:range`,
      });
    }
  }
  const notes = [];
  if (partial) notes.push("Dotted markers, hatched bars: a period not over yet (partial).");
  if (ranged) notes.push("Shaded bars: the range where terms are not recorded.");
  // Each target a dashed line across the chart at its value, with the gap said beside it.
  const shapes = targets.map((t) => ({
    type: "line", xref: "paper", x0: 0, x1: 1, yref: "y", y0: t.value, y1: t.value,
    line: { color: "#b3261e", width: 1.5, dash: "dash" }, name: `target:${t.metric}`,
  }));
  const targetNotes = targets.map((t) => ({
    text: `${title(t.metric)}: target ${targetText(t)}, ${gapText(t, byName[t.metric])}`,
    name: `target:${t.metric}`, xref: "paper", yref: "y", x: 1, y: t.value, xanchor: "right",
    yanchor: "bottom", showarrow: false, font: { size: 10, color: "#b3261e" },
  }));
  const layout = {
    title: { text: chart.title, font: { size: 14 } },
    shapes,
    margin: { t: 40, r: 10, b: notes.length ? 70 : 40, l: 50 },
    legend: { orientation: "h", y: -0.2 },
    barmode: "group",
    yaxis: {
      ...(chart.percent ? { tickformat: ".0%" } : {}),
      rangemode: "tozero",
      ...(targets.length ? { range: yRange(traces, targets) } : {}),
    },
    annotations: [
      ...targetNotes,
      ...(missing.length
        ? [{
            text: `Not recorded: ${missing.join(", ")}`,
            xref: "paper", yref: "paper", x: 0, y: 1.08, showarrow: false,
            font: { size: 11, color: "#8a8f91" }, xanchor: "left",
          }]
        : []),
      ...(notes.length
        ? [{
            text: notes.join(" "), name: "legend-note",
            xref: "paper", yref: "paper", x: 0, y: -0.38, showarrow: false,
            font: { size: 11, color: "#5b6b70" }, xanchor: "left",
          }]
        : []),
    ],
  };
  Plotly.react($(id), traces, layout, PLOT_CONFIG);
}

// A y range that shows both the series and every target line (plotly's own would leave a
// target above the data off the chart).
function yRange(traces, targets) {
  const values = traces.flatMap((t) => t.y.filter((v) => v !== null && v !== undefined));
  const top = Math.max(0, ...values, ...targets.map((t) => t.value));
  return [0, top * 1.15 || 1];
}

// Where a label runs longer than this on a narrow screen, it is broken over lines (plotly's
// <br>), so that two columns' labels do not run into each other ("TheWaste landfilled").
const NARROW_PX = 600;
const WRAP_CHARS = 14;

function wrapLabel(label, width) {
  if (width > NARROW_PX) return label;
  const lines = [];
  for (const word of label.split(" ")) {
    const last = lines[lines.length - 1];
    if (last !== undefined && (last + " " + word).length <= WRAP_CHARS) {
      lines[lines.length - 1] = `${last} ${word}`;
    } else {
      lines.push(word);
    }
  }
  return lines.join("<br>");
}

// The flows as plotly draws them. Recovered material is both where the city's flows go and
// where its recycled inputs come from: one node would close a loop, drawn as an arc around
// the whole diagram (off the top for a 290 kg loop). Here it is two nodes, its two ends:
// "Recovered in the city" on the right, "Recovered, used again" on the left. With no cycle
// left, plotly lays the nodes out from the data (columns by their links, heights by their
// mass) inside the chart, instead of at positions fixed in advance.
function sankeyGraph(flows) {
  const nodes = [];
  const index = {};
  const add = (id, label, kind) => {
    if (!(id in index)) {
      index[id] = nodes.length;
      nodes.push({ id, label, kind });
    }
    return index[id];
  };
  const byId = Object.fromEntries(flows.nodes.map((n) => [n.id, n]));
  const end = (id, outgoing) => {
    const n = byId[id];
    if (n.kind !== "recovered") return add(n.id, n.label, n.kind);
    return outgoing
      ? add(`${n.id}:used`, "Recovered, used again", "recovered")
      : add(n.id, n.label, "recovered");
  };
  const links = flows.links.map((l) => ({ ...l, s: end(l.source, true), t: end(l.target, false) }));
  return { nodes, links };
}

function renderSankey(flows) {
  const colour = (state, alpha) => {
    const hex = STATE_COLOURS[state] || "#8a8f91";
    const [r, g, b] = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
    return `rgba(${r},${g},${b},${alpha})`;
  };
  const graph = sankeyGraph(flows);
  const box = $("chart-sankey");
  const width = box.clientWidth || window.innerWidth;
  // Tall enough for the column with most nodes: 44 px a node, 56 on a phone where a label
  // is broken over two or three lines; and as much padding between nodes as a label is tall,
  // since a node of a few grams is a line and its neighbour's label would touch its own.
  const depth = {};
  const columnOf = (i) => depth[i] ?? 0;
  // the longest path from a source: the columns plotly will draw
  for (let pass = 0; pass < graph.nodes.length; pass++) {
    for (const l of graph.links) depth[l.t] = Math.max(columnOf(l.t), columnOf(l.s) + 1);
  }
  // and, as plotly justifies them, every node with nothing going out in the last column
  const last = Math.max(0, ...Object.values(depth));
  const sources = new Set(graph.links.map((l) => l.s));
  graph.nodes.forEach((_, i) => {
    if (!sources.has(i)) depth[i] = last;
  });
  const counts = {};
  graph.nodes.forEach((_, i) => (counts[columnOf(i)] = (counts[columnOf(i)] || 0) + 1));
  const most = Math.max(1, ...Object.values(counts));
  const narrow = width <= NARROW_PX;
  const height = Math.max(420, 60 + most * (narrow ? 56 : 44));
  const trace = {
    type: "sankey",
    arrangement: "snap",
    valueformat: ",.2f",
    valuesuffix: " kg",
    textfont: { size: width > NARROW_PX ? 12 : 10 },
    node: {
      // On a phone the city's label (to its right) and the sinks' (to their left) share one
      // narrow gap and run into each other: the city, the bar every flow passes through, is
      // named in the note under the diagram instead.
      label: graph.nodes.map((n) =>
        (width <= NARROW_PX && n.kind === "city" ? "" : wrapLabel(n.label, width))),
      customdata: graph.nodes.map((n) => n.id),
      pad: narrow
        ? Math.floor((0.55 * height) / most)
        : Math.min(14, Math.floor((height - 40) / (3 * most))),
      thickness: width > NARROW_PX ? 14 : 10,
      color: graph.nodes.map((n) => (n.kind === "stock" ? "#c9b27c" : "#7f9ba3")),
      hovertemplate: "%{label}: %{value}<extra></extra>",
    },
    link: {
      source: graph.links.map((l) => l.s),
      target: graph.links.map((l) => l.t),
      value: graph.links.map((l) => l.value),
      customdata: graph.links.map((l) => l.state || "not recorded"),
      color: graph.links.map((l) => colour(l.state, 0.35)),
      hovertemplate: "%{source.label} → %{target.label}: %{value} (%{customdata})<extra></extra>",
    },
  };
  const layout = {
    height,
    // room above the top node and below the bottom one for a label of three lines
    margin: narrow ? { t: 28, r: 6, b: 28, l: 6 } : { t: 10, r: 10, b: 10, l: 10 },
    annotations: flows.links.length
      ? []
      : [{ text: "No material flows recorded in this period", showarrow: false,
           xref: "paper", yref: "paper", x: 0.5, y: 0.5, font: { color: "#8a8f91" } }],
  };
  Plotly.react($("chart-sankey"), flows.links.length ? [trace] : [], layout, PLOT_CONFIG);
  const notes = ["Links are coloured by state: green measured, blue reported, amber modelled."];
  if (width <= NARROW_PX && flows.links.length) {
    notes.push("The bar in the middle that every flow passes through is the city's sites.");
  }
  if (graph.nodes.some((n) => n.id.endsWith(":used"))) {
    notes.push("Material recovered in the city is drawn at both its ends: where the city's " +
      "flows go (right) and where it comes back in as a recycled input (left).");
  }
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
  const category = document.createElement("th");
  category.textContent = "Category";
  head.append(category);
  for (const key of columns) {
    // "DE" is jargon: the header links to its explanation, and its full title is the tooltip.
    const th = document.createElement("th");
    th.dataset.metric = key;
    const a = explainLink(key, key.toUpperCase());
    th.title = title(key);
    th.append(a);
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
        wrap.append(stateBadge(f.state), " ", confidenceBadge(f.confidence, true));
        const td = cell(wrap, "num");
        td.dataset.value = String(f.value);
        td.dataset.confidence = f.confidence || "";
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
  const csv = [["site", "site_name", "kind", "device", "device_name", "device_kind", "online",
    "last_seen"]];
  for (const site of sites) {
    const own = devices.filter((d) => d.site === site.slug);
    if (!own.length) csv.push([site.slug, site.name, site.kind, "", "", "", "", ""]);
    for (const d of own) {
      csv.push([site.slug, site.name, site.kind, d.slug, d.name, d.kind, d.online ?? "",
        d.last_seen ?? ""]);
    }
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
  EXPORTS.devices = { rows: csv, file: `${$("city").value}-devices` };
}

// Exports ----------------------------------------------------------------------------------
// Each chart and table has a CSV button; each chart a PNG one. A CSV the API makes is fetched
// with the key and saved from a blob (a plain link sends no key: a 401 when keys are on); a
// table made here is written here. EXPORTS[id] says which, filled in as each part is drawn.
const EXPORTS = {};

function saveBlob(blob, filename) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = filename;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 60000);
}

function csvText(rows) {
  const field = (v) => {
    const text = v === null || v === undefined ? "" : String(v);
    return /[",\n\r]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
  };
  return rows.map((r) => r.map(field).join(",")).join("\r\n") + "\r\n";
}

async function downloadCSV(id) {
  const how = EXPORTS[id];
  if (!how) return;
  try {
    if (how.url) {
      const response = await send(how.url, { headers: { accept: "text/csv" } });
      if (!response.ok) throw new Error(`${how.url}: ${response.statusText}`);
      saveBlob(await response.blob(), `${how.file}.csv`);
    } else {
      saveBlob(new Blob([csvText(how.rows)], { type: "text/csv" }), `${how.file}.csv`);
    }
  } catch (error) {
    $("status").textContent = `Could not export: ${error.message}`;
  }
}

function addTools(id) {
  const chart = $(id);
  const card = chart.parentElement;
  if (card.querySelector(".card-tools")) return;
  const tools = document.createElement("div");
  tools.className = "card-tools";
  for (const kind of ["csv", "png"]) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = kind;
    button.dataset.for = id;
    button.textContent = kind.toUpperCase();
    button.title = kind === "csv" ? "The chart's figures as CSV" : "The chart as a PNG image";
    tools.append(button);
  }
  card.append(tools);
}

document.addEventListener("click", (e) => {
  const button = e.target.closest("button.csv, button.png");
  if (!button) return;
  const id = button.dataset.for;
  if (button.classList.contains("csv")) {
    downloadCSV(id);
  } else {
    const chart = $(id);
    Plotly.downloadImage(chart, {
      format: "png", filename: `${$("city").value}-${id.replace(/^chart-/, "")}`,
      width: Math.max(chart.clientWidth, 600), height: Math.max(chart.clientHeight, 300),
    });
  }
});

// Targets --------------------------------------------------------------------------------------

function renderTargets(city, targets, byName) {
  const table = $("targets");
  const head = document.createElement("tr");
  for (const h of ["Metric", "Target", "Latest", "Gap", "Note"]) {
    const th = document.createElement("th");
    th.textContent = h;
    head.append(th);
  }
  const rows = [head];
  const csv = [["metric", "direction", "value", "unit", "due", "latest_start", "latest_value",
    "gap", "note"]];
  for (const t of targets) {
    const now = latest(byName[t.metric]);
    const tr = document.createElement("tr");
    tr.dataset.metric = t.metric;
    tr.dataset.gap = now ? String(gap(t, now.value)) : "";
    tr.append(
      cell(explainLink(t.metric)),
      cell(targetText(t)),
      now ? cell(`${formatValue(t.metric, t.unit, now.value)} (${now.start})`, "num")
        : cell("not recorded", "missing"),
      cell(gapText(t, byName[t.metric])),
      cell(t.note || ""),
    );
    rows.push(tr);
    csv.push([t.metric, t.direction, t.value, t.unit, t.due, now?.start ?? "", now?.value ?? "",
      now ? gap(t, now.value) : "", t.note || ""]);
  }
  if (!targets.length) {
    const tr = document.createElement("tr");
    const td = cell("No target set for this city yet.", "missing");
    td.colSpan = 5;
    tr.append(td);
    rows.push(tr);
  }
  table.replaceChildren(...rows);
  EXPORTS.targets = { rows: csv, file: `${city}-targets` };
}

function fillTargetForm() {
  const select = $("target-metric");
  if (select.options.length) return;
  for (const [name, d] of Object.entries(DEFINITIONS)) select.add(new Option(d.title, name));
  select.value = "local_input_share";
  $("target-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const city = $("city").value;
    const metric = $("target-metric").value;
    const body = {
      direction: $("target-direction").value,
      value: Number($("target-value").value),
      due: $("target-due").value,
      note: $("target-note").value.trim() || null,
    };
    const message = $("target-message");
    message.textContent = "Saving…";
    try {
      const response = await send(
        `/v1/cities/${encodeURIComponent(city)}/targets/${encodeURIComponent(metric)}`,
        { method: "PUT", headers: { "content-type": "application/json" },
          body: JSON.stringify(body) },
      );
      if (!response.ok) {
        let detail = response.statusText;
        try {
          detail = (await response.json()).detail || detail;
        } catch (_) {
          // not a problem document
        }
        message.textContent = `Not saved: ${detail}`;
        return;
      }
      message.textContent = `Saved: ${title(metric)} ${targetText(await response.json())}.`;
      await render();
    } catch (error) {
      message.textContent = `Not saved: ${error.message}`;
    }
  });
}

// Compare --------------------------------------------------------------------------------------
// The table: the whole period of each city (its summary); the chart: one metric's windows.
const COMPARED = ["fci", "local_input_share", "cmu", "diversion_rate", "produced_count",
  "repaired_count", "input_kg", "waste_kg", "dmc_per_person"];

function comparedCities() {
  return [...document.querySelectorAll("#compare-cities input:checked")].map((i) => i.value);
}

function fillCompare(cities, current) {
  const box = $("compare-cities");
  for (const c of cities) {
    const label = document.createElement("label");
    label.className = "check";
    const input = document.createElement("input");
    input.type = "checkbox";
    input.value = c.slug;
    // the city shown, and up to four others to start with
    input.checked = c.slug === current || cities.indexOf(c) < 5;
    input.addEventListener("change", () => renderCompare().then(done, failed));
    label.append(input, ` ${c.name}`);
    box.append(label);
  }
  const select = $("compare-metric");
  for (const name of COMPARED) select.add(new Option(title(name), name));
  select.value = "local_input_share";
  select.addEventListener("change", () => renderCompare().then(done, failed));
}

async function renderCompare() {
  const slugs = comparedCities();
  const metric = $("compare-metric").value;
  const interval = $("interval").value;
  const q = query();
  const table = $("compare");
  if (!slugs.length) {
    table.replaceChildren();
    Plotly.react($("chart-compare"), [], { title: { text: "Choose a city or more" } }, PLOT_CONFIG);
    return;
  }
  const cities = slugs.map(encodeURIComponent).join(",");
  const url = `/v1/compare?cities=${cities}&names=${metric}&${q}&interval=${interval}`;
  const [comparison, ...summaries] = await Promise.all([
    getJSON(url),
    ...slugs.map((c) => getJSON(`/v1/cities/${encodeURIComponent(c)}/summary?${q}`)),
  ]);
  const unit = comparison.cities[0]?.series[0]?.unit;
  const percent = unit === "ratio" && !INDEXES.has(metric);
  const traces = comparison.cities.map((c, i) => ({
    name: summaries[i].name,
    meta: c.city,
    x: c.series[0].points.map((p) => p.start),
    y: c.series[0].points.map((p) => p.value),
    type: ADDITIVE_UNITS.has(unit) ? "bar" : "scatter",
    mode: "lines+markers",
    connectgaps: false,
  }));
  Plotly.react($("chart-compare"), traces, {
    title: { text: `${title(metric)}, city by city`, font: { size: 14 } },
    margin: { t: 40, r: 10, b: 40, l: 50 },
    legend: { orientation: "h", y: -0.2 },
    barmode: "group",
    yaxis: { rangemode: "tozero", ...(percent ? { tickformat: ".0%" } : {}) },
  }, PLOT_CONFIG);
  explains("chart-compare", [metric]);
  addTools("chart-compare");
  EXPORTS["chart-compare"] = { url: `${url}&format=csv`, file: "compare" };

  const head = document.createElement("tr");
  const th = document.createElement("th");
  th.textContent = "City";
  head.append(th);
  for (const name of COMPARED) {
    const h = document.createElement("th");
    h.dataset.metric = name;
    h.append(explainLink(name));
    head.append(h);
  }
  const rows = [head];
  const csv = [["city", "from", "to", ...COMPARED]];
  for (const summary of summaries) {
    const figures = Object.fromEntries(summary.figures.map((f) => [f.name, f]));
    const tr = document.createElement("tr");
    tr.dataset.city = summary.city;
    tr.append(cell(summary.name));
    for (const name of COMPARED) {
      const f = figures[name];
      if (!f || f.value === null) {
        tr.append(cell("not recorded", "num missing"));
      } else {
        const td = cell(formatValue(name, f.unit, f.value), "num");
        td.dataset.value = String(f.value);
        td.dataset.metric = name;
        tr.append(td);
      }
    }
    rows.push(tr);
    csv.push([summary.city, summary.from, summary.to,
      ...COMPARED.map((n) => figures[n]?.value ?? "")]);
  }
  table.replaceChildren(...rows);
  EXPORTS.compare = { rows: csv, file: "compare-summary" };
}

// Drill down: city → site → device ---------------------------------------------------------
const DRILL = { site: "", device: "", sites: [], devices: [] };
const GROUPS = {
  site: "site", device: "device", resource: "resource", ring: "ring (where from)",
  mfa_category: "MFA category",
};
const DRILLED = ["input_kg", "produced_count", "waste_kg", "local_input_share",
  "diversion_rate", "energy_kwh", "machine_hours"];

function fillDrill() {
  const metric = $("breakdown-metric");
  for (const name of DRILLED) metric.add(new Option(title(name), name));
  metric.value = "input_kg";
  $("drill-site").addEventListener("change", () => drillTo($("drill-site").value, ""));
  $("drill-device").addEventListener("change", () => drillTo(DRILL.site, $("drill-device").value));
  for (const id of ["breakdown", "breakdown-metric"]) {
    $(id).addEventListener("change", () => renderDrill().then(done, failed));
  }
}

function drillTo(site, device) {
  DRILL.site = site;
  DRILL.device = device;
  rememberView();
  return renderDrill().then(done, failed);
}

function drillOptions() {
  const site = $("drill-site");
  site.replaceChildren(new Option("the whole city", ""));
  for (const s of DRILL.sites) site.add(new Option(s.name, s.slug));
  site.value = DRILL.site;
  const device = $("drill-device");
  device.replaceChildren(new Option(DRILL.site ? "all of the site's" : "choose a site first", ""));
  for (const d of DRILL.devices.filter((d) => d.site === DRILL.site)) {
    device.add(new Option(d.name, d.slug));
  }
  device.disabled = !DRILL.site;
  device.value = DRILL.device;
  const groups = DRILL.device
    ? []
    : Object.keys(GROUPS).filter((g) => !(DRILL.site && g === "site"));
  const breakdown = $("breakdown");
  const kept = breakdown.value;
  breakdown.replaceChildren(...groups.map((g) => new Option(GROUPS[g], g)));
  if (DRILL.device) breakdown.add(new Option("the device alone", ""));
  breakdown.value = groups.includes(kept) ? kept : groups[0] ?? "";
  breakdown.disabled = Boolean(DRILL.device);
}

function crumbs(cityName) {
  const nav = $("crumbs");
  const step = (text, site, device, here) => {
    if (here) {
      const b = document.createElement("strong");
      b.textContent = text;
      return b;
    }
    const a = document.createElement("a");
    a.href = "#h-drill";
    a.textContent = text;
    a.addEventListener("click", (e) => {
      e.preventDefault();
      drillTo(site, device);
    });
    return a;
  };
  const parts = [step(cityName, "", "", !DRILL.site)];
  if (DRILL.site) {
    const site = DRILL.sites.find((s) => s.slug === DRILL.site);
    parts.push(" › ", step(site ? site.name : DRILL.site, DRILL.site, "", !DRILL.device));
  }
  if (DRILL.device) {
    const device = DRILL.devices.find((d) => d.slug === DRILL.device && d.site === DRILL.site);
    parts.push(" › ", step(device ? device.name : DRILL.device, DRILL.site, DRILL.device, true));
  }
  nav.replaceChildren(...parts);
}

async function renderDrill() {
  drillOptions();
  const city = $("city").value;
  crumbs($("city-name").textContent || city);
  const metric = $("breakdown-metric").value;
  const interval = $("interval").value;
  const group = DRILL.device ? "device" : $("breakdown").value;
  const params = new URLSearchParams({ from: $("from").value, to: $("to").value, interval,
    names: metric, group_by: group });
  if (DRILL.site) params.set("site", DRILL.site);
  const url = `/v1/cities/${encodeURIComponent(city)}/metrics?${params}`;
  const body = await getJSON(url);
  const series = body.series.filter((s) => !DRILL.device || s.key === DRILL.device);
  const unit = series[0]?.unit || DEFINITIONS[metric]?.unit;
  const additive = ADDITIVE_UNITS.has(unit);
  const percent = unit === "ratio";
  const traces = series.map((s) => ({
    name: s.key, meta: s.key,
    x: s.points.map((p) => p.start), y: s.points.map((p) => p.value),
    type: additive ? "bar" : "scatter", mode: "lines+markers", connectgaps: false,
  }));
  const where = DRILL.device ? `device ${DRILL.device}` : DRILL.site ? `site ${DRILL.site}` : city;
  Plotly.react($("chart-breakdown"), traces, {
    title: {
      text: `${title(metric)}: ${where}${DRILL.device ? "" : `, by ${GROUPS[group] || group}`}`,
      font: { size: 14 },
    },
    margin: { t: 40, r: 10, b: 40, l: 50 },
    legend: { orientation: "h", y: -0.2 },
    barmode: additive ? "stack" : "group",
    yaxis: { rangemode: "tozero", ...(percent ? { tickformat: ".0%" } : {}) },
    annotations: series.length ? [] : [{ text: "Nothing recorded here in this period",
      showarrow: false, xref: "paper", yref: "paper", x: 0.5, y: 0.5,
      font: { color: "#8a8f91" } }],
  }, PLOT_CONFIG);
  explains("chart-breakdown", [metric]);
  addTools("chart-breakdown");
  EXPORTS["chart-breakdown"] = { url: `${url}&format=csv`, file: `${city}-breakdown` };
  EXPORTS.breakdown = EXPORTS["chart-breakdown"];

  // The table: one row a key; a total where the metric adds up (a share does not).
  const starts = series[0]?.points.map((p) => String(p.start)) || [];
  const head = document.createElement("tr");
  for (const h of [GROUPS[group] || group, ...starts, ...(additive ? ["Total"] : [])]) {
    const th = document.createElement("th");
    th.textContent = h;
    head.append(th);
  }
  const rows = [head];
  for (const s of series) {
    const tr = document.createElement("tr");
    tr.dataset.key = s.key;
    const name = cell(s.key);
    // a site, or a device, is a step further down. A device's slug is its site's own (two
    // sites may each have a "printer"): at the city's level its key is `site/device`, and a
    // site's own reports lead to the site.
    const [keySite, keyDevice] = group === "device" && !DRILL.site
      ? s.key.split("/") : [DRILL.site, s.key];
    const reports = keyDevice === "(site reports)";
    const device = group === "device" && !DRILL.device && (!reports || !DRILL.site);
    if (group === "site" || device) {
      const a = document.createElement("a");
      a.href = "#h-drill";
      a.textContent = s.key;
      a.addEventListener("click", (e) => {
        e.preventDefault();
        if (group === "site") drillTo(s.key, "");
        else drillTo(keySite, reports ? "" : keyDevice);
      });
      name.replaceChildren(a);
    }
    tr.append(name);
    for (const p of s.points) {
      if (p.value === null) {
        tr.append(cell("", "num missing"));
      } else {
        const td = cell(formatValue(metric, unit, p.value), "num");
        td.dataset.value = String(p.value);
        tr.append(td);
      }
    }
    if (additive) {
      const total = s.points.reduce((sum, p) => sum + (p.value ?? 0), 0);
      const recorded = s.points.some((p) => p.value !== null);
      const td = cell(recorded ? formatValue(metric, unit, total) : "not recorded",
        recorded ? "num total" : "num missing");
      if (recorded) td.dataset.value = String(total);
      tr.append(td);
    }
    rows.push(tr);
  }
  $("breakdown-table").replaceChildren(...rows);
}

// Map ------------------------------------------------------------------------------------------
// A scatter of the sites on longitude and latitude axes, no basemap: plotly's geo traces fetch
// their world shapes from a CDN (and at 1:50 million a city is a dot), and the dashboard must
// work with no network beyond this API. Longitude is drawn shrunk by cos(latitude), so that a
// kilometre east is as long as a kilometre north. The marker's area is the site's inputs (kg).
async function renderMap(city, sites) {
  // Each site's inputs over the whole period, one value a site (a day series by site, summed
  // here, was 7,300 points for a year).
  const params = new URLSearchParams({ from: $("from").value, to: $("to").value,
    names: "input_kg", group_by: "site" });
  const body = await getJSON(`/v1/cities/${encodeURIComponent(city)}/breakdown?${params}`);
  const kg = Object.fromEntries(body.parts.map((p) => [p.key, p.value]));
  const placed = sites.filter((s) => s.latitude !== null && s.latitude !== undefined &&
    s.longitude !== null && s.longitude !== undefined);
  const unplaced = sites.filter((s) => !placed.includes(s));
  const most = Math.max(0, ...placed.map((s) => kg[s.slug] ?? 0));
  const lat = placed.length ? placed.reduce((a, s) => a + s.latitude, 0) / placed.length : 0;
  const span = (values) => {
    const lo = Math.min(...values), hi = Math.max(...values);
    const pad = Math.max((hi - lo) * 0.15, 0.005);
    return [lo - pad, hi + pad];
  };
  const trace = {
    type: "scatter", mode: "markers+text", meta: "sites",
    x: placed.map((s) => s.longitude), y: placed.map((s) => s.latitude),
    text: placed.map((s) => s.name), textposition: "top center",
    customdata: placed.map((s) => [s.slug, kg[s.slug] ?? null]),
    hovertemplate: "%{text}: %{customdata[1]:,.2f} kg in<extra></extra>",
    marker: {
      size: placed.map((s) => 8 + (most ? 32 * Math.sqrt((kg[s.slug] ?? 0) / most) : 0)),
      color: placed.map((s) => (kg[s.slug] === null || kg[s.slug] === undefined
        ? "#8a8f91" : "#1b7f5b")),
      line: { width: 1, color: "#1d2a2f" }, opacity: 0.8,
    },
  };
  const layout = {
    title: { text: "Sites: marker area by material used (kg); grey reported nothing",
      font: { size: 14 } },
    margin: { t: 40, r: 10, b: 40, l: 60 },
    showlegend: false,
    xaxis: placed.length
      ? { title: { text: "longitude" }, range: span(placed.map((s) => s.longitude)),
          scaleanchor: "y", scaleratio: Math.cos((lat * Math.PI) / 180), constrain: "domain" }
      : { visible: false },
    yaxis: placed.length
      ? { title: { text: "latitude" }, range: span(placed.map((s) => s.latitude)),
          constrain: "domain" }
      : { visible: false },
    annotations: placed.length ? [] : [{ text: "No site has coordinates yet", showarrow: false,
      xref: "paper", yref: "paper", x: 0.5, y: 0.5, font: { color: "#8a8f91" } }],
  };
  const box = $("chart-map");
  await Plotly.react(box, placed.length ? [trace] : [], layout, PLOT_CONFIG);
  if (!box.dataset.clicks) {
    box.dataset.clicks = "on";
    box.on("plotly_click", (e) => {
      const slug = e.points[0]?.customdata?.[0];
      if (slug) {
        drillTo(slug, "");
        $("h-drill").scrollIntoView();
      }
    });
  }
  addTools("chart-map");
  EXPORTS["chart-map"] = {
    rows: [["site", "name", "latitude", "longitude", "input_kg"],
      ...sites.map((s) => [s.slug, s.name, s.latitude, s.longitude, kg[s.slug] ?? ""])],
    file: `${city}-sites`,
  };
  $("map-note").textContent = (unplaced.length
    ? `Without coordinates, so not on the map: ${unplaced.map((s) => s.name).join(", ")}. `
    : "") + "Click a site to drill down to it.";
}

// The page ---------------------------------------------------------------------------------------

function query() {
  const p = new URLSearchParams({ from: $("from").value, to: $("to").value });
  return p.toString();
}

function rememberView() {
  const p = new URLSearchParams({ city: $("city").value, from: $("from").value,
    to: $("to").value, interval: $("interval").value });
  if (DRILL.site) p.set("site", DRILL.site);
  if (DRILL.device) p.set("device", DRILL.device);
  if (Number($("refresh").value) > 0) p.set("refresh", $("refresh").value);
  history.replaceState(null, "", `?${p}${location.hash}`);
}

function done() {
  document.body.dataset.ready = "true";
}

function failed(error) {
  $("status").textContent = `Could not load the figures: ${error.message}`;
  document.body.dataset.ready = "true";
}

let lastRender = 0;

async function render() {
  const city = $("city").value;
  if (!city) return;
  const interval = $("interval").value;
  const q = query();
  rememberView();
  $("csv-link").href = `/v1/cities/${city}/summary?${q}&format=csv`;
  $("ngsi-link").href = `/v1/cities/${city}/ngsi-ld?${q}&interval=${interval}`;
  $("status").textContent = "Loading…";
  document.body.dataset.ready = "false";
  lastRender = Date.now();
  try {
    const base = `/v1/cities/${encodeURIComponent(city)}`;
    const targets = await getJSON(`${base}/targets`);
    const charted = Object.values(SERIES).flatMap((c) => c.names);
    const names = [...new Set([...charted, ...targets.map((t) => t.metric)])].join(",");
    const metricsURL = `${base}/metrics?${q}&interval=${interval}&names=${names}`;
    const [summary, metrics, flows, sites, devices] = await Promise.all([
      getJSON(`${base}/summary?${q}`),
      getJSON(metricsURL),
      getJSON(`${base}/flows?${q}`),
      getAll(`${base}/sites?limit=500`),
      getAll(`${base}/devices?limit=500`),
    ]);
    $("city-name").textContent = summary.name;
    const byName = Object.fromEntries(
      metrics.series.filter((s) => s.key === null).map((s) => [s.name, s]),
    );
    for (const id of Object.keys(SERIES)) {
      const names = SERIES[id].names.join(",");
      EXPORTS[id] = { url: `${base}/metrics?${q}&interval=${interval}&names=${names}&format=csv`,
        file: `${city}-${id.replace(/^chart-/, "")}` };
    }
    for (const t of targets) {
      EXPORTS[`chart-target-${t.metric}`] = {
        url: `${base}/metrics?${q}&interval=${interval}&names=${t.metric}&format=csv`,
        file: `${city}-${t.metric}`,
      };
    }
    EXPORTS["chart-sankey"] = { url: `${base}/flows?${q}&format=csv`, file: `${city}-flows` };
    EXPORTS.accounts = { url: `${base}/summary?${q}&format=csv`, file: `${city}-summary` };
    EXPORTS.summary = EXPORTS.accounts;
    renderTiles(summary);
    renderTargets(city, targets, byName);
    renderSeries(metrics, targets);
    renderSankey(flows);
    addTools("chart-sankey");
    renderAccounts(summary);
    renderDevices(sites, devices);
    DRILL.sites = sites;
    DRILL.devices = devices;
    if (DRILL.site && !sites.some((s) => s.slug === DRILL.site)) drillTo("", "");
    await Promise.all([renderCompare(), renderDrill(), renderMap(city, sites)]);
    $("status").textContent = "";
  } catch (error) {
    $("status").textContent = `Could not load the figures: ${error.message}`;
  }
  document.body.dataset.renders = String(Number(document.body.dataset.renders || 0) + 1);
  document.body.dataset.ready = "true";
}

// Auto-refresh: every N seconds while the page is shown; a hidden tab asks nothing, and catches
// up as soon as it is shown again.
let refreshTimer = null;

function refreshEvery() {
  clearInterval(refreshTimer);
  const seconds = Number($("refresh").value);
  rememberView();
  if (!(seconds > 0)) return;
  refreshTimer = setInterval(() => {
    if (!document.hidden && document.body.dataset.ready === "true") render();
  }, seconds * 1000);
}

document.addEventListener("visibilitychange", () => {
  const seconds = Number($("refresh").value);
  if (!document.hidden && seconds > 0 && Date.now() - lastRender > seconds * 1000) render();
});

async function start() {
  const params = new URLSearchParams(location.search);
  const [definitions, cities] = await Promise.all([
    getJSON("/v1/definitions"),
    getAll("/v1/cities?limit=500"),
  ]);
  for (const d of definitions.metrics) DEFINITIONS[d.name] = d;
  const select = $("city");
  for (const c of cities) select.add(new Option(c.name, c.slug));
  $("change-key").addEventListener("click", async () => {
    await askForKey("Paste a planner key (it stays in this browser).");
    location.reload();
  });
  if (!cities.length) {
    $("status").textContent = "No city is registered yet, or none this key may read: " +
      `POST /v1/cities first. ${await whatTheKeyReads()}`;
    document.body.dataset.ready = "true";
    return;
  }
  const wanted = params.get("city");
  select.value = cities.some((c) => c.slug === wanted) ? wanted : cities[0].slug;
  const to = params.get("to") || isoDate(new Date());
  $("to").value = to;
  $("from").value = params.get("from") || daysBefore(to, 30);
  $("interval").value = params.get("interval") || "day";
  DRILL.site = params.get("site") || "";
  DRILL.device = params.get("device") || "";
  const refresh = Number(params.get("refresh") || 0);
  if (refresh >= 2) {
    if (![...$("refresh").options].some((o) => Number(o.value) === refresh)) {
      $("refresh").add(new Option(`every ${refresh} s`, String(refresh)));
    }
    $("refresh").value = String(refresh);
  }
  fillTargetForm();
  fillCompare(cities, select.value);
  fillDrill();
  const due = new Date();
  $("target-due").value = `${due.getFullYear() + 4}-12-31`;
  select.addEventListener("change", () => {
    DRILL.site = "";
    DRILL.device = "";
    render();
  });
  for (const el of [$("from"), $("to"), $("interval")]) el.addEventListener("change", render);
  $("refresh").addEventListener("change", refreshEvery);
  $("csv-link").addEventListener("click", (e) => {
    // a plain link sends no key: fetch it with the key, and save what comes back
    e.preventDefault();
    downloadCSV("summary");
  });
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
  refreshEvery();
}

start().catch((error) => {
  $("status").textContent = `Could not start: ${error.message}`;
  document.body.dataset.ready = "true";
});
