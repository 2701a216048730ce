// The ML page's run history: every training run with its trigger, duration, labels used, label policy and
// recipe, and the loss curve of the run chosen (the newest by default).

import { bootData, get } from "./api.js";
import { $, cell, notice } from "./dom.js";
import { lossCurveSvg } from "./plot.js";

const pid = bootData().project.id;

function duration(r) {
  if (!r.started_at) return "—";
  const s = ((r.finished_at ? Date.parse(r.finished_at) : Date.now()) - Date.parse(r.started_at)) / 1000;
  return s >= 60 ? `${Math.floor(s / 60)} min ${Math.round(s % 60)} s` : `${Math.round(s)} s`;
}

function recipe(r) {
  const c = r.config || {}, t = c.train || {}, ctx = (c.input || {}).context_slices || 1;
  if (c.bundle) return `MONAI bundle ${c.bundle.name} ${c.bundle.version || ""}: measured, not trained`;
  const parts = [`${t.epochs ?? "?"} epochs`, t.patch_size ? `patch ${t.patch_size[0]}` : null, ctx > 1 ? `2.5D (${ctx})` : "2D",
    r.base_version ? "fine-tune" : "from scratch"];
  return parts.filter(Boolean).join(", ");
}

function showLoss(r) {
  $("loss-curve").innerHTML = lossCurveSvg(r.epochs);
  $("loss-h").textContent = `Loss curve · run ${r.id}`;
}

export async function refreshHistory() {
  const page = await get(`/api/v1/projects/${pid}/training-runs?page_size=20`);
  const runs = page.results || page;
  const body = $("run-history");
  body.replaceChildren();
  for (const r of runs) {
    const tr = document.createElement("tr");
    tr.dataset.run = String(r.id);
    cell(tr, `#${r.id}`); cell(tr, r.requested_by ? `${r.trigger} (${r.requested_by})` : r.trigger);
    cell(tr, r.status); cell(tr, r.started_at ? new Date(r.started_at).toLocaleString() : "—");
    cell(tr, duration(r)); cell(tr, r.labels_used); cell(tr, r.label_policy); cell(tr, recipe(r));
    cell(tr, r.result_version_number ? `v${r.result_version_number}` : r.outcome || "—");
    const b = document.createElement("button");
    b.type = "button"; b.className = "secondary"; b.textContent = "Loss curve";
    b.setAttribute("aria-label", `Loss curve of run ${r.id}`);
    b.onclick = () => showLoss(r);
    cell(tr, "").append(b);
    body.append(tr);
  }
  if (!runs.length) { const tr = document.createElement("tr"); cell(tr, "No runs yet.").colSpan = 10; body.append(tr); }
  else showLoss(runs[0]);
}

refreshHistory().catch((e) => notice(e.message));
