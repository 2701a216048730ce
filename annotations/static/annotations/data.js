// The data manager's page: upload with progress, recent imports, readers per case, members and roles, images.

import { api, bootData, csrfToken, get, getAll, patch, post } from "./api.js";
import { $, cell, notice } from "./dom.js";

const boot = bootData();
const pid = boot.project.id;

async function refreshImages() {
  const images = await getAll(`/api/v1/projects/${pid}/images`);
  const body = $("images");
  body.replaceChildren();
  for (const im of images) {
    const tr = document.createElement("tr");
    cell(tr, im.display_name); cell(tr, im.source_kind); cell(tr, im.modality); cell(tr, im.shape.join(" × "));
    cell(tr, im.status); cell(tr, im.num_cases ?? "—"); cell(tr, new Date(im.created_at).toLocaleString());
    body.append(tr);
  }
  if (!images.length) { const tr = document.createElement("tr"); cell(tr, "No images yet.").colSpan = 7; body.append(tr); }
}

function fileOutcome(f) {
  if (f.error) return `file ${f.index}: ${f.error.code}: ${f.error.message}`;
  if (f.status === "duplicate") return `file ${f.index}: duplicate of image ${f.duplicates.map((d) => d.existing_image_id).join(", ")}`;
  if (f.status === "imported") return `file ${f.index}: ${f.image_ids.length} image(s)`;
  return `file ${f.index}: ${f.status}`;
}

/** The last imports (first page), so an upload can be followed after leaving the page. */
async function refreshImports() {
  const body = $("imports");
  if (!body) return;  // only data managers and admins see imports
  const page = await get(`/api/v1/projects/${pid}/imports?page_size=20`);
  body.replaceChildren();
  for (const job of page.results) {
    const tr = document.createElement("tr");
    cell(tr, `#${job.id}`); cell(tr, new Date(job.created_at).toLocaleString()); cell(tr, job.split);
    cell(tr, job.files.length); cell(tr, job.finished_at ? job.status : `${job.status} ${job.progress}%`);
    cell(tr, job.files.map(fileOutcome).join(" · "));
    body.append(tr);
  }
  if (!page.results.length) { const tr = document.createElement("tr"); cell(tr, "No imports yet.").colSpan = 6; body.append(tr); }
}

async function refreshMembers() {
  const members = await getAll(`/api/v1/projects/${pid}/members`);
  const body = $("members");
  body.replaceChildren();
  for (const m of members) {
    const tr = document.createElement("tr");
    cell(tr, m.username); cell(tr, m.role.replace("_", " "));
    const act = cell(tr, "");
    if (boot.can.manage_members) {
      const b = document.createElement("button");
      b.type = "button"; b.className = "secondary"; b.textContent = "Remove";
      b.setAttribute("aria-label", `Remove ${m.username} as ${m.role}`);
      b.onclick = async () => {
        try { await api("DELETE", `/api/v1/projects/${pid}/members/${m.id}`); notice(null); } catch (e) { notice(e.message); }
        refreshMembers();
      };
      act.append(b);
    }
    body.append(tr);
  }
}

/** XMLHttpRequest, not fetch: only XHR reports upload progress. Resolves with the import job (202). */
function upload(form) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", `/api/v1/projects/${pid}/images`);
    xhr.setRequestHeader("X-CSRFToken", csrfToken());
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.onprogress = (e) => {
      if (e.lengthComputable) $("upload-progress").value = Math.round((50 * e.loaded) / e.total);
    };
    xhr.onload = () => {
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch { /* not JSON */ }
      if (xhr.status >= 200 && xhr.status < 300) resolve(body);
      else reject(new Error((body && body.error && body.error.message) || `HTTP ${xhr.status}`));
    };
    xhr.onerror = () => reject(new Error("network error"));
    const data = new FormData();
    for (const f of form.elements.file.files) data.append("file", f);
    if (form.elements.mask.files[0]) data.append("mask", form.elements.mask.files[0]);
    data.append("split", form.elements.split.value);
    xhr.send(data);
  });
}

const FINISHED = new Set(["succeeded", "partial", "failed"]);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Follow an import job until the worker has parsed every file: the second half of the progress bar. */
async function follow(job) {
  for (let delay = 300; !FINISHED.has(job.status); delay = Math.min(delay * 1.5, 2000)) {
    $("upload-status").textContent = job.message || `import #${job.id}: waiting for the ingest worker…`;
    $("upload-progress").value = 50 + Math.round(job.progress / 2);
    await sleep(delay);
    job = await get(`/api/v1/imports/${job.id}`);
  }
  return job;
}

function summary(job) {
  const names = job.images.map((i) => i.display_name).join(", ");
  const dups = job.files.reduce((n, f) => n + (f.duplicates || []).length, 0);
  const parts = [`imported: ${names || "nothing new"}`];
  if (dups) parts.push(`${dups} duplicate(s) not stored`);
  return parts.join(" · ");
}

function showFileErrors(job) {
  const list = $("upload-errors");
  list.replaceChildren();
  for (const f of job.files.filter((x) => x.error)) {
    const li = document.createElement("li");
    li.textContent = `file ${f.index}: ${f.error.message} (${f.error.code})`;
    list.append(li);
  }
  list.hidden = !list.children.length;
}

$("upload").onsubmit = async (ev) => {
  ev.preventDefault();
  $("upload-progress").value = 0;
  $("upload-status").textContent = "uploading…";
  $("upload-errors").hidden = true;
  try {
    const job = await follow(await upload(ev.target));
    $("upload-progress").value = 100;
    $("upload-status").textContent = summary(job);
    showFileErrors(job);
    notice(job.status === "succeeded" ? null : `Import #${job.id} ${job.status}: see the files below.`);
    ev.target.reset();
    refreshImages();
    refreshImports();
  } catch (e) {
    $("upload-status").textContent = "upload failed";
    notice(`Upload failed: ${e.message}`);
  }
};

// Readers per case, and the reading policy: a random share of cases multi-read, the most uncertain share
// routed to more readers (annotations.selectors.reading_policy).
// The unit of work on volumes: a reader is given a slab's (or a volume's) slices one after another.
const READING = ["readers_per_case", "multi_read_share", "multi_read_readers", "routing_share", "routing_readers", "unit_slices"];
const readers = $("readers");
for (const k of READING) readers.elements[k].value = boot.settings[k];
readers.elements.unit_score.value = boot.settings.unit_score;
readers.onsubmit = async (ev) => {
  ev.preventDefault();
  $("readers-saved").hidden = true;
  try {
    await patch(`/api/v1/projects/${pid}`, {
      ...Object.fromEntries(READING.map((k) => [k, Number(readers.elements[k].value)])),
      unit_score: readers.elements.unit_score.value,
    });
    $("readers-saved").hidden = false;
    notice(null);
  } catch (e) { notice(e.message); }
};

const add = $("add-member");
if (add) {
  add.onsubmit = async (ev) => {
    ev.preventDefault();
    try {
      await post(`/api/v1/projects/${pid}/members`, { username: $("new-username").value, role: $("new-role").value });
      notice(null); add.reset();
    } catch (e) { notice(e.message); }
    refreshMembers();
  };
}

Promise.all([refreshImages(), refreshMembers(), refreshImports()]).catch((e) => notice(e.message));
