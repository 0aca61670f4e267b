// Telerad console: live batches table, batch page refresh, review-and-send upload.
"use strict";

function fmt(s) {
  if (s === null || s === undefined) return "–";
  if (s < 60) return s.toFixed(1) + "s";
  if (s < 3600) return Math.floor(s / 60) + "m " + Math.floor(s % 60) + "s";
  return Math.floor(s / 3600) + "h " + Math.floor((s % 3600) / 60) + "m";
}

function cell(text) { const td = document.createElement("td"); td.textContent = text; return td; }

function row(b) {
  const tr = document.createElement("tr");
  tr.dataset.batch = b.batch_id;
  tr.dataset.state = b.state;
  tr.className = "state-" + b.state + (b.over_target ? " late" : "");
  const link = document.createElement("a");
  link.href = "/console/batches/" + b.batch_id;
  link.textContent = b.batch_id.slice(0, 8);
  const first = document.createElement("td"); first.appendChild(link); tr.appendChild(first);
  tr.appendChild(cell(b.priority));
  const st = cell(b.state); st.className = "state"; tr.appendChild(st);
  tr.appendChild(cell(fmt(b.age_seconds)));
  tr.appendChild(cell(fmt(b.waiting_seconds) + " of " + fmt(b.target_seconds) + (b.over_target ? " (over target)" : "")));
  const stages = Object.entries(b.stages).filter(([, t]) => t.seconds !== null).map(([k, t]) => k + " " + fmt(t.seconds));
  tr.appendChild(cell(stages.join(" ")));
  tr.appendChild(cell(b.counts.images !== undefined ? String(b.counts.images) : ""));
  return tr;
}

async function refreshTable(table) {
  try {
    const res = await fetch(table.dataset.live, {credentials: "same-origin"});
    if (res.status === 401) { window.location = "/console/login"; return; }
    if (!res.ok) return;
    const batches = await res.json();
    for (const body of table.tBodies) {
      const prio = body.dataset.priority;
      const mine = batches.filter(b => b.priority === prio);
      const group = body.rows[0];
      group.cells[0].textContent = prio + " (" + mine.length + ")";
      while (body.rows.length > 1) body.deleteRow(1);
      for (const b of mine) body.appendChild(row(b));
    }
    const done = batches.filter(b => b.state === "done").length;
    document.getElementById("updated").textContent =
      "Live: " + batches.length + " batches, " + done + " done; updated " + new Date().toLocaleTimeString() + ".";
  } catch (e) { /* the next tick tries again */ }
}

async function refreshBatch(dl) {
  if (dl.dataset.final === "yes") return;
  try {
    const res = await fetch("/api/batches/" + dl.dataset.batch, {credentials: "same-origin"});
    if (!res.ok) return;
    const b = await res.json();
    if (b.state !== dl.dataset.state) window.location.reload();
  } catch (e) { /* try again */ }
}

// --- review and send -----------------------------------------------------------------
const review = {overrides: {}, reviewed: null};

function show(id, text) { document.getElementById(id).textContent = text || ""; }

async function problemOf(res) {
  try { const body = await res.json(); return typeof body.detail === "string" ? body.detail : "the request was refused (" + res.status + ")"; }
  catch (e) { return "the request failed (" + res.status + ")"; }
}

function currentEdits() {
  const out = {};
  for (const input of document.querySelectorAll("#review-table input[data-keyword]")) {
    const v = input.value.trim();
    if (v !== input.dataset.initial) out[input.dataset.keyword] = v;
  }
  return Object.assign({}, review.overrides, out);
}

function renderReview(data) {
  const body = document.querySelector("#review-table tbody");
  body.innerHTML = "";
  for (const f of data.fields) {
    const tr = document.createElement("tr");
    const th = document.createElement("th"); th.scope = "row"; th.textContent = f.label; tr.appendChild(th);
    tr.appendChild(cell(f.original || "(empty)"));
    const td = document.createElement("td");
    td.dataset.keyword = f.keyword;
    if (f.editable) {
      const id = "edit-" + f.keyword;
      const label = document.createElement("label"); label.htmlFor = id; label.className = "sr-only";
      label.textContent = f.label + " that will leave";
      const input = document.createElement("input");
      input.type = "text"; input.id = id; input.value = f.deidentified; input.dataset.keyword = f.keyword;
      input.dataset.initial = f.deidentified; input.maxLength = 64;
      input.addEventListener("input", () => { review.reviewed = null; document.getElementById("send").hidden = true; });
      td.appendChild(label); td.appendChild(input);
    } else {
      td.textContent = f.deidentified || "(removed)";
    }
    if (f.original !== f.deidentified) td.classList.add("changed");
    tr.appendChild(td);
    body.appendChild(tr);
  }
}

async function runReview(overrides) {
  const files = document.getElementById("files").files;
  show("problem", "");
  if (!files.length) { show("problem", "Choose the study's files first."); return; }
  const form = new FormData();
  form.append("file", files[0]);
  form.append("overrides", JSON.stringify(overrides));
  show("message", "Reviewing…");
  const res = await fetch("/api/review", {method: "POST", body: form, credentials: "same-origin"});
  if (!res.ok) { show("message", ""); show("problem", "Not accepted: " + await problemOf(res)); return; }
  const data = await res.json();
  review.overrides = data.overrides;
  review.reviewed = JSON.stringify(data.overrides);
  renderReview(data);
  document.getElementById("review").hidden = false;
  document.getElementById("send").hidden = false;
  show("message", "Reviewed: the table shows what will leave. Edit and check again, or send.");
  document.getElementById("review-heading").focus();
}

async function send() {
  const edits = currentEdits();
  if (review.reviewed !== JSON.stringify(edits)) { show("problem", "Check your edits before sending."); return; }
  const form = new FormData();
  for (const f of document.getElementById("files").files) form.append("files", f);
  form.append("priority", document.getElementById("priority").value);
  form.append("overrides", JSON.stringify(edits));
  show("message", "Sending…");
  const res = await fetch("/api/batches", {method: "POST", body: form, credentials: "same-origin"});
  if (res.status !== 202) { show("message", ""); show("problem", "Not sent: " + await problemOf(res)); return; }
  const data = await res.json();
  const msg = document.getElementById("message");
  msg.textContent = "Sent as batch ";
  const a = document.createElement("a"); a.id = "sent-batch"; a.href = "/console/batches/" + data.batch_id;
  a.textContent = data.batch_id; msg.appendChild(a); msg.appendChild(document.createTextNode("."));
}

document.addEventListener("DOMContentLoaded", () => {
  const table = document.getElementById("batches");
  if (table) { refreshTable(table); setInterval(() => refreshTable(table), 1000); }
  const dl = document.getElementById("batch");
  if (dl) setInterval(() => refreshBatch(dl), 2000);
  const reviewButton = document.getElementById("review-button");
  if (reviewButton) {
    reviewButton.addEventListener("click", () => { review.overrides = {}; runReview({}); });
    document.getElementById("check-button").addEventListener("click", () => runReview(currentEdits()));
    document.getElementById("send-button").addEventListener("click", send);
  }
});
