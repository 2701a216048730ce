// The ML engineer's page: training runs with live progress, model versions (promote / roll back), the
// learning curve, active-learning settings and the queue head.

import { ApiError, bootData, csrfToken, get, getAll, patch, post } from "./api.js";
import { $, cell, fmt, notice } from "./dom.js";
import { refreshHistory } from "./ml_runs.js";
import { learningCurveSvg } from "./plot.js";

const boot = bootData();
const pid = boot.project.id;
const OPEN = new Set(["queued", "running"]);
let run = null;
let poller = null;
let watching = false;
// The project's ML settings, from GET /api/v1/projects/{id}/training-settings (null until loaded).
let settings = null;
const settingsUrl = `/api/v1/projects/${pid}/training-settings`;

function showRun(r) {
  run = r;
  const bar = $("run-progress");
  if (!r) return;
  const done = r.status === "succeeded";
  bar.value = done ? 1 : Math.min(1, (r.progress || 0) / 100);
  bar.dataset.status = r.status;
  const eta = r.eta_seconds != null ? ` · about ${Math.round(r.eta_seconds)} s left` : "";
  const result = r.result_version_number ? ` · produced v${r.result_version_number}` : "";
  $("run-status").textContent = `Run ${r.id}: ${r.status}${OPEN.has(r.status) ? ` · ${Math.round(r.progress || 0)} %` : ""}${eta}${result}`
    + (r.waiting_for ? ` · ${r.waiting_for}` : "") + (r.outcome ? ` · ${r.outcome}` : "");
  $("run-status").className = r.status === "failed" ? "error" : "muted";
  $("run-recipe").textContent = recipeText(r);
  $("btn-cancel").disabled = !boot.can.train || !OPEN.has(r.status) || r.cancel_requested;
  $("btn-start").disabled = !boot.can.train || OPEN.has(r.status);
  const log = $("epoch-log");
  log.replaceChildren();
  for (const e of r.epochs || []) {
    const tr = document.createElement("tr");
    cell(tr, e.epoch); cell(tr, fmt(e.train_loss, 4)); cell(tr, fmt(e.val_dice)); cell(tr, fmt(e.seconds, 2));
    log.append(tr);
  }
}

/** What the run trains and on what, from the config it recorded: the dataset fingerprint, the plan it
 * implied (patch, batch, depth), the epochs and whether it fine-tunes the active version. */
function recipeText(r) {
  const c = r.config || {};
  if (c.bundle) {  // an imported MONAI bundle: its own network and weights, measured and gated, not trained
    const target = (c.bundle.network_def || {})._target_ || "";
    return `Imported MONAI bundle ${c.bundle.name} ${c.bundle.version || ""} (${target.split(".").pop()}): measured on the validation cases and gated, not trained`;
  }
  if (c.nnunet) {  // nnU-Net v2: its own fingerprint, plan and trainer decide the rest
    return `Recipe: nnU-Net v2, 2d configuration planned from the data · ${c.nnunet.epochs} epochs x ${c.nnunet.iterations} steps, from scratch`;
  }
  const fp = c.fingerprint, t = c.train || {}, net = c.network || {};
  const parts = [];
  if (fp) {
    parts.push(`${fp.images} images, median ${fp.median_size[0]}x${fp.median_size[1]} px`);
  }
  if (t.patch_size) parts.push(`patch ${t.patch_size[0]}x${t.patch_size[1]}, batch ${t.batch_size}`);
  if (net.channels) parts.push(`${net.channels.length}-level ${net.arch || "unet"}`);
  const input = c.input || {}, ctx = input.context_slices || 1;
  const apart = input.context_mm ? ` ${fmt(input.context_mm, 1)} mm apart` : "";
  parts.push(ctx > 1 ? `2.5D: each slice with ${ctx - 1} neighbours${apart} as input` : "2D: one slice per input");
  if (t.epochs) {
    const steps = t.steps_per_epoch ? ` x ${t.steps_per_epoch} steps` : "";
    parts.push(`${t.epochs} epochs${steps}${r.base_version ? ", fine-tuning the active version" : ", from scratch"}`);
  }
  if (t.modality) parts.push(`${t.modality} intensities`);
  return parts.length ? `Recipe: ${parts.join(" · ")}` : "";
}

async function refreshRun() {
  const runs = await get(`/api/v1/projects/${pid}/training-runs?page_size=1`);
  const latest = (runs.results || runs)[0];
  if (!latest) return;
  showRun(await get(`/api/v1/training-runs/${latest.id}`));
  if (OPEN.has(run.status)) {
    watching = true;
    if (!poller) poller = setTimeout(() => { poller = null; refreshRun().catch((e) => notice(e.message)); }, 1000);
  } else if (watching) {  // the run we watched just finished: its version, curve and queue are new
    watching = false;
    notice(`Run ${run.id} ${run.status}${run.result_version_number ? `: produced v${run.result_version_number}` : ""}.`,
      run.status === "succeeded" ? "info" : "error");  // replaces "Training run started."
    await Promise.all([refreshVersions(), refreshCurve(), refreshQueue(), refreshHistory()]);
  }
}

/** Predicted pixels on validation cases that hold none of the class, as a share of their pixels (the
 * worst class): what a reader would have to erase on an empty case. */
function falsePositives(validation) {
  const shares = (validation?.classes || []).map((c) => c.fp_fraction_empty).filter((x) => x != null);
  return shares.length ? `${(100 * Math.max(...shares)).toFixed(2)} %` : "—";
}

const BACKEND_NAMES = { nnunet: "nnU-Net v2", monai_bundle: "imported MONAI bundle" };

async function refreshVersions() {
  const versions = await getAll(`/api/v1/projects/${pid}/model-versions`);
  const body = $("versions");
  body.replaceChildren();
  for (const v of versions) {
    const tr = document.createElement("tr");
    tr.dataset.version = v.number;
    const backend = v.backend !== "builtin" ? v.backend : null;  // the service's own U-Net: no label
    const num = cell(tr, `v${v.number}`);
    if (backend) {
      const small = document.createElement("div"); small.className = "muted small backend";
      const tuned = v.metrics.fine_tuned_bundle ? " (fine-tuned)" : "";
      small.textContent = (BACKEND_NAMES[backend] || backend) + tuned; num.append(small);
    }
    const st = cell(tr, v.state);
    if (v.state === "active") st.innerHTML = '<span class="badge ok">active</span>';
    if (v.scoring && !v.scoring.finished_at) {  // pool scoring runs chunk by chunk: show how far it is
      const small = document.createElement("div"); small.className = "muted small scoring";
      small.textContent = `scoring the pool: ${v.scoring.done}/${v.scoring.total}`; st.append(small);
    }
    cell(tr, v.metrics.labelled_cases ?? "—");
    const older = v.metrics.dice_metric ? "" : " (older metric)";  // per-slice mean: not comparable
    const val = cell(tr, fmt(v.metrics.validation_dice) + older);
    const classes = perClass(v.metrics.validation);
    if (classes) { const small = document.createElement("div"); small.className = "muted small per-class"; small.textContent = classes; val.append(small); }
    cell(tr, fmt(v.metrics.test_dice) + older);
    cell(tr, falsePositives(v.metrics.validation));
    const sampled = v.metrics.validation_calibration_mc;  // MC dropout, or mirror TTA without dropout
    const how = sampled?.sampling === "mirror" ? "TTA" : "MC";
    cell(tr, fmt(v.metrics.validation_calibration?.ece) + (sampled?.ece != null ? ` (${how} ${fmt(sampled.ece)})` : ""));
    cell(tr, v.parent_number ? `v${v.parent_number}` : "—");
    cell(tr, new Date(v.created_at).toLocaleString());
    const act = cell(tr, "");
    if (boot.can.train && v.state !== "active") {
      const b = document.createElement("button");
      b.type = "button"; b.className = "secondary"; b.textContent = `Promote v${v.number}`;
      b.onclick = () => {
        if (!window.confirm(`Make v${v.number} the active model? Readers get its proposals from now on and the pool is re-scored.`)) return;
        act_(() => post(`/api/v1/model-versions/${v.id}/promote`), `v${v.number} is now active.`);
      };
      act.append(b);
    }
    if (boot.can.train && backend !== "nnunet") {  // the weights leave as a MONAI bundle (`monai.bundle run`)
      const a = document.createElement("a");
      a.href = `/api/v1/model-versions/${v.id}/bundle`; a.download = ""; a.className = "small bundle-download";
      a.textContent = "MONAI bundle"; a.title = `Download v${v.number} as a MONAI bundle (configs/inference.json runs it on NIfTI files)`;
      act.append(" ", a);
    }
    body.append(tr);
  }
  if (!versions.length) { const tr = document.createElement("tr"); cell(tr, "No model versions yet: start a training run.").colSpan = 10; body.append(tr); }
}

async function refreshCurve() {
  const { points } = await get(`/api/v1/projects/${pid}/learning-curve`);
  // The models readers were given: candidates that gating kept back would make the curve seem to fall.
  const promoted = points.filter((p) => p.promoted);
  const kept = points.length - promoted.length;
  $("curve").innerHTML = learningCurveSvg(promoted)
    + (kept ? `<p class="muted small">${kept} candidate version(s) never made active are not plotted.</p>` : "");
}

/** Validation Dice per class by the project's label names, e.g. "grey matter 0.93 · white matter 0.95". */
function perClass(validation) {
  const names = new Map(boot.project.label_classes.map((c) => [c.value, c.name]));
  return (validation?.classes || [])
    .filter((c) => c.pooled_dice != null)
    .map((c) => `${names.get(c.label) ?? `class ${c.label}`} ${fmt(c.pooled_dice)}`)
    .join(" · ");
}

async function refreshQueue() {
  const body = $("queue");
  body.replaceChildren();
  let head;
  try { head = await get(`/api/v1/projects/${pid}/queue?limit=10`); } catch (e) {
    const tr = document.createElement("tr"); cell(tr, e.message).colSpan = 6; body.append(tr); return;
  }
  head.forEach((c, i) => {
    const tr = document.createElement("tr");
    const r = c.queue_reason || {};
    cell(tr, r.rank ?? i + 1); cell(tr, `${c.image_name} · slice ${c.slice_index}`);
    cell(tr, r.strategy || "—"); cell(tr, fmt(r.score, 4)); cell(tr, r.model_version ? `v${r.model_version}` : "—");
    cell(tr, c.reads_taken);
    body.append(tr);
  });
  if (!head.length) { const tr = document.createElement("tr"); cell(tr, "The queue is empty.").colSpan = 6; body.append(tr); }
}

async function act_(fn, okText) {
  notice(null);
  try {
    await fn();
    notice(okText, "info");
  } catch (e) {
    notice(`${e.message}${e.code ? ` (${e.code})` : ""}`);
  }
  await Promise.all([refreshRun(), refreshVersions(), refreshCurve(), refreshQueue()]);
}

$("btn-start").onclick = () => {
  const epochs = $("epochs").value;
  const config = epochs ? { ...((settings && settings.training_config) || {}), epochs: Number(epochs) } : {};
  $("btn-start").disabled = true;
  $("run-progress").value = 0;
  watching = true;  // its end replaces the notice below, however fast it comes
  act_(() => post(`/api/v1/projects/${pid}/training-runs`, { config }), "Training run started.");
};
// A MONAI bundle becomes a run with trigger "bundle": checked at once (a refusal says why), then measured on
// the validation cases and gated like a trained version.
async function importBundle(file) {
  const data = new FormData();
  data.append("file", file);
  const resp = await fetch(`/api/v1/projects/${pid}/model-bundles`, {
    method: "POST", body: data, credentials: "same-origin",
    headers: { Accept: "application/json", "X-CSRFToken": csrfToken() },
  });
  const body = await resp.json().catch(() => null);
  if (!resp.ok) throw new ApiError(resp.status, body);
  return body;
}
if ($("bundle-import")) {
  $("bundle-import").onsubmit = (e) => {
    e.preventDefault();
    const file = $("bundle-file").files[0];
    if (!file) return;
    watching = true;
    act_(() => importBundle(file), `Bundle ${file.name} accepted: it is measured on the validation cases and gated.`);
  };
}
$("btn-cancel").onclick = () => run && act_(() => post(`/api/v1/training-runs/${run.id}/cancel`), "Cancel requested.");
$("btn-rollback").onclick = () => {
  if (!window.confirm("Roll back to the previously active version? Readers get its proposals from now on and the pool is re-scored.")) return;
  act_(() => post(`/api/v1/projects/${pid}/model-versions/rollback`), "Rolled back.");
};

const form = $("settings");

// One checkbox per explanation method, cheapest first; methods the chosen network cannot use are disabled.
// Without explain_methods in the project's config, the server's defaults (explain_methods_default) are ticked.
function renderMethodChecks() {
  const config = settings.training_config || {};
  const chosen = new Set(config.explain_methods || settings.explain_methods_default);
  const box = $("explain-methods");
  for (const m of boot.explain_methods) {
    const label = document.createElement("label");
    label.className = "check";
    const input = document.createElement("input");
    input.type = "checkbox"; input.name = "explain_method"; input.value = m.method; input.checked = chosen.has(m.method);
    input.dataset.archs = m.archs.join(" ");
    const cost = m.interactive ? "on demand" : `~${Math.round(m.nominal_cost)}x forward, background`;
    label.append(input, ` ${m.method} `);
    const badge = document.createElement("span");
    badge.className = `badge ${m.interactive ? "ok" : ""}`; badge.textContent = cost;
    label.append(badge);
    box.append(label);
  }
}

function syncMethodsToArch() {
  const arch = form.elements.arch.value;
  for (const input of form.querySelectorAll("input[name=explain_method]")) {
    const usable = input.dataset.archs.split(" ").includes(arch);
    input.disabled = !usable || !boot.can.set_training;
    if (!usable) input.checked = false;
  }
}

// The form stays disabled until the settings are loaded (and for roles that may not change them).
for (const el of form.elements) el.disabled = true;

async function loadSettings() {
  settings = await get(settingsUrl);
  renderMethodChecks();
  for (const el of form.elements) el.disabled = !boot.can.set_training;
  for (const name of ["query_strategy", "auto_retrain_every", "gating_tolerance"]) form.elements[name].value = settings[name];
  form.elements.arch.value = (settings.training_config || {}).arch || "unet";
  form.elements.backend.value = (settings.training_config || {}).backend || "builtin";
  form.elements.arch.onchange = syncMethodsToArch;
  syncMethodsToArch();
  form.dataset.loaded = "true";
}

form.onsubmit = async (ev) => {
  ev.preventDefault();
  if (!settings) return;
  $("settings-saved").hidden = true;
  const methods = [...form.querySelectorAll("input[name=explain_method]:checked")].map((i) => i.value);
  const training_config = {
    ...(settings.training_config || {}), arch: form.elements.arch.value, backend: form.elements.backend.value, explain_methods: methods,
  };
  try {
    settings = await patch(settingsUrl, {
      query_strategy: form.elements.query_strategy.value,
      auto_retrain_every: Number(form.elements.auto_retrain_every.value),
      gating_tolerance: Number(form.elements.gating_tolerance.value),
      training_config,
    });
    $("settings-saved").hidden = false;
    notice(null);
    refreshQueue();
  } catch (e) { notice(e.message); }
};

Promise.all([loadSettings(), refreshRun(), refreshVersions(), refreshCurve(), refreshQueue()]).catch((e) => notice(e.message));
