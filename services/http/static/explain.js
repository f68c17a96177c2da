// The explanation page: every metric's definition (GET /v1/definitions), an anchor each, so
// that the dashboard links a tile or a column header to `/explain#<metric>`.
"use strict";

function el(tag, text, attrs = {}) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

async function start() {
  const response = await fetch("/v1/definitions", { headers: { accept: "application/json" } });
  const body = await response.json();
  const concepts = document.getElementById("concepts");
  for (const [name, text] of Object.entries(body.concepts)) {
    concepts.append(el("dt", name, { id: `concept-${name}` }), el("dd", text));
  }
  const box = document.getElementById("metrics");
  for (const m of body.metrics) {
    const article = el("article", undefined, { id: m.name, class: "definition" });
    article.append(el("h3", `${m.title} (${m.name}, ${m.unit})`));
    article.append(el("p", m.says));
    const dl = el("dl");
    dl.append(el("dt", "formula"), el("dd", m.formula));
    dl.append(el("dt", "made from"), el("dd", m.sources));
    if (m.notes) dl.append(el("dt", "keep in mind"), el("dd", m.notes));
    article.append(dl);
    box.append(article);
  }
  document.body.dataset.ready = "true";
  // The anchor exists only now: go to it.
  if (location.hash) document.getElementById(location.hash.slice(1))?.scrollIntoView();
}

start();
