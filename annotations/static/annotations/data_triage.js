// The data page's flagged and skipped cases (data managers and admins): the readers' reasons, and a flagged
// case returned to the reading queue in one click.

import { bootData, get, post } from "./api.js";
import { $, cell, notice } from "./dom.js";

const pid = bootData().project.id;

function caseCell(tr, r) {
  cell(tr, `case ${r.case} · ${r.image_name} · slice ${r.slice_index}`);
}

function empty(body, text, span) {
  const tr = document.createElement("tr");
  cell(tr, text).colSpan = span;
  body.append(tr);
}

async function refreshTriage() {
  const flaggedBody = $("flagged");
  if (!flaggedBody) return;  // only data managers and admins see this section
  const data = await get(`/api/v1/projects/${pid}/flagged-skipped`);
  flaggedBody.replaceChildren();
  for (const r of data.flagged) {
    const tr = document.createElement("tr");
    tr.dataset.case = String(r.case);
    caseCell(tr, r); cell(tr, r.reader); cell(tr, r.reason); cell(tr, new Date(r.at).toLocaleString());
    const b = document.createElement("button");
    b.type = "button"; b.className = "secondary"; b.textContent = "Return to queue";
    b.setAttribute("aria-label", `Return case ${r.case} to the reading queue`);
    b.onclick = async () => {
      try { await post(`/api/v1/cases/${r.case}/return-to-queue`); notice(null); } catch (e) { notice(e.message); }
      refreshTriage();
    };
    cell(tr, "").append(b);
    flaggedBody.append(tr);
  }
  if (!data.flagged.length) empty(flaggedBody, "No flagged cases.", 5);
  const skippedBody = $("skipped");
  skippedBody.replaceChildren();
  for (const r of data.skipped) {
    const tr = document.createElement("tr");
    caseCell(tr, r); cell(tr, r.reader); cell(tr, r.reason); cell(tr, new Date(r.at).toLocaleString());
    skippedBody.append(tr);
  }
  if (!data.skipped.length) empty(skippedBody, "No skipped cases.", 4);
}

refreshTriage().catch((e) => notice(e.message));
