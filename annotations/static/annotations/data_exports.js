// The data manager's Exports panel: create a label export, watch it run, download the zip (SHA-256 shown).
// Only data managers and admins may use the export API; for everyone else the panel says so and calls nothing.

import { ApiError, bootData, get, getAll, post } from "./api.js";
import { $, cell, notice } from "./dom.js";

const boot = bootData();
const pid = boot.project.id;
const OPEN = new Set(["queued", "running"]);
const jobs = new Map();  // id -> the API's job object
let poller = null;

/** The API's message and code, so a data manager can tell "no mask matches" from a permission problem. */
function showError(prefix, e) {
  notice(e instanceof ApiError ? `${prefix}: ${e.message} [${e.code}]` : `${prefix}: ${e.message}`);
}

const when = (iso) => (iso ? new Date(iso).toLocaleString() : "—");

function size(bytes) {
  if (!bytes) return "—";
  const units = ["B", "kB", "MB", "GB"];
  const i = Math.min(units.length - 1, Math.floor(Math.log(bytes) / Math.log(1000)));
  return `${(bytes / 1000 ** i).toFixed(i ? 1 : 0)} ${units[i]}`;
}

function statusCell(tr, job) {
  const td = cell(tr, job.status);
  if (!OPEN.has(job.status)) return;
  const bar = document.createElement("progress");
  bar.max = 100; bar.value = job.progress || 0;
  bar.setAttribute("aria-label", `Export ${job.id} progress`);
  td.append(bar);
  if (job.waiting_for) {  // queued: why it has not started
    const why = document.createElement("div");
    why.className = "muted small waiting"; why.textContent = job.waiting_for;
    td.append(why);
  }
}

function shaCell(tr, job) {
  const td = cell(tr, job.sha256 ? `${job.sha256.slice(0, 12)}…` : "—");
  if (job.sha256) { td.title = job.sha256; td.className = "sha"; }
}

function lastCell(tr, job) {
  const td = cell(tr, "");
  if (job.download_url) {
    const a = document.createElement("a");
    a.href = job.download_url; a.textContent = "Download";
    a.setAttribute("aria-label", `Download export ${job.id}`);
    td.append(a);
  } else if (job.status === "failed") {
    td.textContent = job.error || "failed"; td.className = "error";
  }
}

function render() {
  const body = $("exports");
  body.replaceChildren();
  const rows = [...jobs.values()].sort((a, b) => b.created_at.localeCompare(a.created_at) || b.id - a.id);
  for (const job of rows) {
    const tr = document.createElement("tr");
    tr.dataset.job = job.id; tr.dataset.status = job.status;
    cell(tr, job.id); cell(tr, when(job.created_at)); cell(tr, job.params.formats.join(", "));
    cell(tr, job.params.labels); cell(tr, job.masks);
    statusCell(tr, job); cell(tr, size(job.size_bytes)); shaCell(tr, job);
    cell(tr, when(job.expires_at)); lastCell(tr, job);
    body.append(tr);
  }
  if (!rows.length) { const tr = document.createElement("tr"); cell(tr, "No exports yet.").colSpan = 10; body.append(tr); }
}

/** Re-read the open jobs once a second until none is queued or running. */
function schedulePoll() {
  if (poller || ![...jobs.values()].some((j) => OPEN.has(j.status))) return;
  poller = setTimeout(async () => {
    poller = null;
    try {
      const open = [...jobs.values()].filter((j) => OPEN.has(j.status));
      for (const job of await Promise.all(open.map((j) => get(`/api/v1/exports/${j.id}`)))) jobs.set(job.id, job);
      render();
      schedulePoll();
    } catch (e) { showError("Could not refresh the exports", e); }
  }, 1000);
}

function request(form) {
  const ticked = (name) => [...form.querySelectorAll(`input[name=${name}]:checked`)].map((el) => el.value);
  return { formats: ticked("format"), split: ticked("split"), labels: form.elements.labels.value };
}

async function create(ev) {
  ev.preventDefault();
  const button = $("export-create");
  button.disabled = true;
  try {
    const job = await post(`/api/v1/projects/${pid}/exports`, request(ev.target));
    jobs.set(job.id, job);
    notice(null);
    render();
    schedulePoll();
  } catch (e) {
    showError("Export not created", e);
  } finally {
    button.disabled = false;
  }
}

async function start() {
  if (!boot.can.export) {  // the list API would answer 403
    $("exports-status").textContent = "Exports need the data manager or admin role";
    $("exports").closest("table").hidden = true;
    return;
  }
  $("export-form").onsubmit = create;
  try {
    for (const job of await getAll(`/api/v1/projects/${pid}/exports`)) jobs.set(job.id, job);
    render();
    schedulePoll();
  } catch (e) { showError("Could not load the exports", e); }
}

start();
