// The ML page's "Explanation quality" panel: run the report on the active model, follow its progress
// (polling while it is queued or running), then show the per-method table, the plot and the surrogate.
// Its own module so the rest of the ML page (ml.js) is untouched by it.

import { bootData, get, post } from "./api.js";
import { $, cell, fmt } from "./dom.js";

const boot = bootData();
const pid = boot.project.id;
const OPEN = new Set(["queued", "running"]);
const COLUMNS = [  // [key, decimals] in the order of the table head
  ["deletion_auc", 3], ["insertion_auc", 3], ["pointing_game", 2], ["energy_inside", 3],
  ["consistency", 3], ["ms", 0], ["x_forward", 1],
];
let poller = null;

function showStatus(r) {
  const open = OPEN.has(r.status);
  const bar = $("report-progress");
  bar.value = r.status === "succeeded" ? 1 : Math.min(1, (r.progress || 0) / 100);
  bar.dataset.status = r.status;
  const version = `v${r.model_version_number}${r.model_version_state === "active" ? "" : ` (${r.model_version_state})`}`;
  $("report-status").textContent = `Report ${r.id} on ${version}, ${r.cases} case(s): ${r.status}`
    + (open ? ` · ${Math.round(r.progress || 0)} %` : "") + (r.waiting_for ? ` · ${r.waiting_for}` : "")
    + (r.error ? ` · ${r.error}` : "");
  $("report-status").className = r.status === "failed" ? "error" : "muted";
  $("btn-report").disabled = !boot.can.train || open;
  const cancel = $("btn-report-cancel");
  cancel.hidden = !(boot.can.train && open);
  cancel.disabled = false;
  cancel.onclick = async () => {
    cancel.disabled = true;
    try { showReport(await post(`/api/v1/explanation-reports/${r.id}/cancel`)); } catch (e) { fail(e); }
  };
}

function showTable(result) {
  const body = $("report-rows");
  body.replaceChildren();
  const families = result.families || {};
  for (const [method, row] of Object.entries(result.methods || {})) {
    const tr = document.createElement("tr");
    tr.dataset.method = method;
    cell(tr, families[method] || method); cell(tr, method);
    for (const [key, digits] of COLUMNS) cell(tr, fmt(row[key], digits));
    body.append(tr);
  }
  for (const [method, reason] of Object.entries(result.skipped || {})) {
    const tr = document.createElement("tr");
    tr.dataset.method = method; tr.className = "muted";
    cell(tr, families[method] || method); cell(tr, method);
    cell(tr, `skipped: ${reason}`).colSpan = COLUMNS.length;
    body.append(tr);
  }
}

function showSurrogate(s) {
  if (!s) { $("report-surrogate").textContent = "—"; $("report-rules").textContent = ""; return; }
  const verdict = s.beats_baseline ? "beats" : "does not beat";
  $("report-surrogate").textContent = `Predicts when the model fails (Dice < ${s.threshold}): held-out fidelity `
    + `${fmt(s.fidelity, 3)} vs majority baseline ${fmt(s.majority_baseline, 3)}; it ${verdict} the baseline.`;
  $("report-rules").textContent = s.rules || "";
}

function showReport(r) {
  showStatus(r);
  const done = r.status === "succeeded" && r.result;
  $("report-result").hidden = !done;
  if (!done) return;
  showTable(r.result);
  showSurrogate(r.result.surrogate);
  const img = $("report-plot");
  img.hidden = !r.plot_url;
  if (r.plot_url && img.getAttribute("src") !== r.plot_url) img.src = r.plot_url;
}

function fail(e) {
  $("report-status").textContent = `${e.message}${e.code ? ` (${e.code})` : ""}`;
  $("report-status").className = "error";
}

async function follow(id) {
  const r = await get(`/api/v1/explanation-reports/${id}`);
  showReport(r);
  if (OPEN.has(r.status) && !poller) {
    poller = setTimeout(() => { poller = null; follow(id).catch(fail); }, 1000);
  }
}

async function showLatest() {
  const page = await get(`/api/v1/projects/${pid}/explanation-reports?page_size=1`);
  const latest = (page.results || page)[0];
  if (latest) await follow(latest.id);
}

$("btn-report").onclick = async () => {
  $("btn-report").disabled = true;
  $("report-progress").value = 0;
  try {
    const r = await post(`/api/v1/projects/${pid}/explanation-reports`, {});
    await follow(r.id);
  } catch (e) {
    fail(e);
    $("btn-report").disabled = !boot.can.train;
  }
};

showLatest().catch(fail);
