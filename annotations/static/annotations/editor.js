// The annotator's editor page: wires the viewer, tools, history, layers, shortcuts and the case session.

import { bootData } from "./api.js";
import { button, leaseMethods } from "./editor_lease.js";
import { recentMethods } from "./recent_cases.js";
import { History } from "./history.js";
import { buildExplainRequest } from "./explain_request.js";
import { buildLayers } from "./layers.js";
import { describeError, formatSeconds, LEASE_LAPSED, median, Session } from "./session.js";
import { Shortcuts } from "./shortcuts.js";
import { dab, fillPolygon, regionGrow, stroke } from "./tools.js";
import { MODALITY_PRESETS, Viewer } from "./viewer.js";
import { setupPointer } from "./pointer.js";
import { VolumePanel } from "./volume.js";

const $ = (id) => document.getElementById(id);
const boot = bootData();
// Okabe & Ito's palette (white in place of its black, which vanishes on dark images).
const OKABE_ITO = ["#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#FFFFFF"];

class Editor {
  constructor() {
    this.root = $("editor");
    this.viewer = new Viewer($("view"), () => this.afterRender());
    this.session = new Session(boot.project.id, { onLease: (a, err) => this.showLease(a, err) });
    this.tool = "brush";
    this.brushSize = 8;
    this.labels = boot.project.label_classes;
    this.label = this.labels[0]?.value ?? 1;
    this.stats = { times: [...boot.stats.times], done: boot.stats.cases_done };
    this.polygon = [];
    this.hover = null;
    this.layers = null;
    this.renderStats();
    this.buildLabelPicker();
    this.bindControls();
    this.bindShortcuts();
    setupPointer(this);
    this.viewer.decorate = (ctx) => this.decorate(ctx);
    this.volume = new VolumePanel($("volume"), {
      getWindow: () => this.viewer.window, getColors: () => this.viewer.colors,
    });
    window.addEventListener("beforeunload", (ev) => {
      if (this.history?.dirty && this.state === "ready") { ev.preventDefault(); ev.returnValue = ""; }
    });
    // Closing (or reloading) the tab gives the case back at once instead of holding it until the lease
    // expires; a read-only tab holds nothing, so closing it never releases the case another tab edits.
    window.addEventListener("pagehide", () => {
      if (this.state === "ready" && this.mode !== "revise") this.session.release();  // a revision holds no lease
    });
    setInterval(() => { $("stat-timer").textContent = this.session.caseId ? formatSeconds(this.session.elapsed) : "—"; }, 1000);
  }

  // ---- case lifecycle -------------------------------------------------------------------------------
  async next() {
    this.setState("loading");
    this.notice(null);
    try {
      const assignment = await this.session.claim();
      if (!assignment) { this.setState("empty"); $("case-title").textContent = "queue empty"; return; }
      await this.open(assignment.case, { readOnly: assignment.held_elsewhere });
    } catch (err) {
      this.setState("error");
      const box = this.notice(`Could not open the next case: ${describeError(err)}`, "error");
      box.append(" ", button("btn-try-again", "Try again", () => this.next(), "primary"));
    }
  }

  async open(caseId, { readOnly = false, revise = false } = {}) {
    this.mode = revise ? "revise" : "queue";
    const s = await this.session.load(caseId, { readOnly: readOnly || revise });
    const p = s.payload;
    this.history = new History(s.mask, s.width, s.height, () => this.historyChanged());
    this.viewer.setImage(s.pixels, s.mask, this.displayLabels());
    this.buildPresets(p.case);
    this.layers = await buildLayers($("layers"), this.viewer, p);
    this.applyPalette();
    this.stopExplain?.();
    this.stopExplain = buildExplainRequest($("explain-request"), p, (e) => this.layers.addExplanation(e));
    this.polygon = [];
    $("case-title").textContent = `· ${p.case.image_name} · slice ${p.case.slice_index}`
      + (revise ? ` · revising your revision ${p.head_revision ?? ""}` : "");
    this.renderWhy(p);
    this.renderCaseInfo(p);
    this.historyChanged();
    this.setState("ready");
    this.volume.open(caseId).then(() => { this.showMarkers(this.volume.payload); this.volumeToolsState(); });
    if (readOnly) this.showReadOnly("This case is open in another tab or window of yours.");
    $("view").focus();
    if (!readOnly && !revise && p.model_version && (!p.proposal || p.proposal.stale)) this.awaitProposal(caseId);
  }

  /** The heartbeat reports the project's active version: when it is no longer the one the layers came from
   * (a promote or a rollback while the case is open), reload the proposal, maps and "why" for it. The
   * reader's mask is never touched; "reset to proposal" then uses the new proposal. */
  async activeVersionIs(number) {
    const p = this.session.payload;
    if (!p || this.mode === "revise" || (p.model_version?.number ?? null) === (number ?? null)) return;
    await this.showModelLayers(await this.session.reloadModelLayers());
    this.notice(`Model v${number} is now active: its proposal and maps replace the old ones; your mask is unchanged.`, "info");
  }

  async showModelLayers(fresh) {
    this.viewer.overlays = [];
    this.layers = await buildLayers($("layers"), this.viewer, fresh);
    this.stopExplain?.();
    this.stopExplain = buildExplainRequest($("explain-request"), fresh, (e) => this.layers.addExplanation(e));
    this.renderWhy(fresh);
    this.historyChanged();
    this.viewer.requestRender();
  }

  /** The case opened without the active version's proposal (claimed beyond the queue head while the pool
   * is still being scored): the claim asked for it on the interactive lane, so look again every 1.5 s for
   * a minute. When it arrives it is shown, and becomes the mask if the reader has not drawn yet. */
  async awaitProposal(caseId) {
    for (let i = 0; i < 40; i += 1) {
      await new Promise((resolve) => setTimeout(resolve, 1500));
      if (this.session.caseId !== caseId || this.state !== "ready" || this.mode === "revise") return;
      let fresh;
      try { fresh = await this.session.reloadModelLayers(); } catch { return; }  // the heartbeat reports trouble
      if (this.session.caseId !== caseId) return;
      if (!fresh.proposal || fresh.proposal.stale) continue;
      const untouched = !this.history.dirty;
      if (untouched) this.history.mask.set(this.session.proposalMask);
      await this.showModelLayers(fresh);
      this.viewer.updateMask(0, 0, this.viewer.width - 1, this.viewer.height - 1);
      this.notice(untouched ? `Model v${fresh.proposal.model_version}'s proposal arrived and is now the mask.`
        : `Model v${fresh.proposal.model_version}'s proposal arrived: "Reset to proposal" (R) uses it; your mask is unchanged.`, "info");
      return;
    }
  }

  async submit(retried = false) {
    if (this.state !== "ready") return;
    this.setState("saving");
    try {
      const revising = this.mode === "revise";
      const revision = await this.session.submit(this.history.mask, { revise: revising });
      if (!revising) this.stats.done += 1;
      this.stats.times.push(revision.time_spent_s);
      this.renderStats();
      this.history = null;
      this.lastRevision = revision;
      this.root.dataset.lastRevision = String(revision.id);
      this.refreshRecent();
      await this.next();
    } catch (err) {
      this.setState("ready");
      if (err.code === "stale_base") this.showConflict(err.details.current_revision);
      else if (err.code === "lease_moved" || (LEASE_LAPSED.has(err.code) && !retried)) {
        if (await this.recover(err)) await this.submit(true);  // held again: save what is on screen
      } else this.notice(`Not saved: ${describeError(err)}. Your mask is still here.`, "error");
    }
  }

  /** 409 stale_base: keep the reader's mask on screen; let them build on the new head or load it. */
  showConflict(current) {
    const box = this.notice(
      `Not saved: revision ${current} of this case was saved while you were editing. Your mask is still here.`,
      "error",
    );
    const mine = document.createElement("button");
    mine.type = "button"; mine.id = "btn-conflict-keep"; mine.className = "primary";
    mine.textContent = `Submit my mask as the next revision after ${current}`;
    mine.onclick = () => { this.session.baseRevision = current; this.notice(null); this.submit(); };
    const load = document.createElement("button");
    load.type = "button"; load.id = "btn-conflict-load"; load.className = "secondary";
    load.textContent = `Load revision ${current} (mine stays one undo away)`;
    load.onclick = async () => {
      const head = await this.session.loadHead();
      this.session.baseRevision = head.revision;
      if (head.mask) this.history.replaceAll(head.mask, `load revision ${head.revision}`);
      this.viewer.updateMask(0, 0, this.session.width - 1, this.session.height - 1);
      this.notice(`Loaded revision ${head.revision}. Press Ctrl+Z to get your own mask back.`, "info");
    };
    box.append(" ", mine, " ", load);
  }

  async skipOrFlag(kind) {
    if (this.state !== "ready") return;
    const reason = await this.askReason(kind);
    if (reason == null) return;
    this.setState("saving");
    try {
      await (kind === "skip" ? this.session.skip(reason) : this.session.flag(reason));
      this.history = null;
      await this.next();
    } catch (err) {
      this.setState("ready");
      this.notice(`${kind === "skip" ? "Skip" : "Flag"} failed: ${describeError(err)}`, "error");
    }
  }

  askReason(kind) {
    const dlg = $("dlg-reason");
    $("dlg-reason-title").textContent = kind === "skip" ? "Skip this case" : "Flag this case (leaves the queue)";
    $("reason-ok").textContent = kind === "skip" ? "Skip" : "Flag";
    $("reason-choice").value = ""; $("reason-text").value = ""; $("reason-error").hidden = true;
    return new Promise((resolve) => {
      const onClose = () => {
        dlg.removeEventListener("close", onClose);
        if (dlg.returnValue !== "ok") return resolve(null);
        const choice = $("reason-choice").value;
        const text = $("reason-text").value.trim();
        const reason = [choice !== "other" ? choice : "", text].filter(Boolean).join(": ");
        if (!reason) { $("reason-error").hidden = false; dlg.showModal(); dlg.addEventListener("close", onClose); return; }
        resolve(reason);
      };
      dlg.returnValue = "";
      dlg.addEventListener("close", onClose);
      dlg.showModal();
    });
  }

  // ---- editing --------------------------------------------------------------------------------------
  paintValue() { return this.tool === "eraser" ? 0 : this.label; }

  beginStroke(x, y) {
    if (this.history.open) this.history.commit(this.tool);  // a lost pointerup must not merge strokes
    this.history.begin();
    this.allow = this.brushAllow();
    dab(this.history.mask, this.viewer.width, this.viewer.height, x, y, this.brushSize, this.paintValue(),
      (...r) => this.touched(...r), this.allow);
    this.last = [x, y];
  }

  continueStroke(x, y) {
    const [ax, ay] = this.last;
    stroke(this.history.mask, this.viewer.width, this.viewer.height, ax, ay, x, y, this.brushSize,
      this.paintValue(), (...r) => this.touched(...r), this.allow);
    this.last = [x, y];
  }

  endStroke() { this.history.commit(this.tool); }

  /** The window-bounded brush: with "Brush within window" on, the brush paints only pixels whose value lies
   * inside the current window (W/L), e.g. contrast-filled vessels or a lesion brighter than its organ. */
  brushAllow() {
    const v = this.viewer;
    if (this.tool !== "brush" || !$("brush-window").checked || v.rgb || !v.window) return null;
    const lo = v.window.center - v.window.width / 2, hi = v.window.center + v.window.width / 2;
    const d = v.image.data;
    return (i) => d[i] >= lo && d[i] <= hi;
  }

  /** The region-grow tool: the connected pixels around (x, y) whose value lies inside the window get the
   * current label, one undoable step. */
  grow(x, y) {
    const v = this.viewer;
    if (v.rgb || !v.window) { this.notice("Region growing needs a grey image and a window.", "info"); return; }
    const lo = v.window.center - v.window.width / 2, hi = v.window.center + v.window.width / 2;
    this.history.begin();
    const n = regionGrow(this.history.mask, v.image.data, v.width, v.height, x, y, lo, hi, this.label,
      (...r) => this.touched(...r));
    this.history.commit("grow");
    if (!n) this.notice("The pixel clicked is outside the window: nothing to grow.", "info");
  }

  // ---- volume helpers (the case's neighbouring slices) ------------------------------------------------
  async copySlice(delta) {
    const k = this.volume.payload.case_slice + delta;
    const values = await this.volume.storedLabel(k);
    if (!values) { this.notice(`Slice ${k + 1} has no label of yours to copy.`, "info"); return; }
    if (this.history.replaceAll(values, `copy slice ${k + 1}`)) {
      this.viewer.updateMask(0, 0, this.viewer.width - 1, this.viewer.height - 1);
    }
  }

  async interpolateSlices() {
    const result = await this.volume.interpolated();
    if (!result) { this.notice("Interpolation needs a labelled slice of yours on each side of this one.", "info"); return; }
    if (this.history.replaceAll(result.values, `interpolate slices ${result.from}`)) {
      this.viewer.updateMask(0, 0, this.viewer.width - 1, this.viewer.height - 1);
    }
  }

  volumeToolsState() {
    const p = this.volume.payload, has = (i) => !!this.volume.labelled?.has(i);
    const show = !!p && p.shape[0] > 1;
    $("volume-tools").hidden = !show;
    if (!show) return;
    $("btn-copy-prev").disabled = !has(p.case_slice - 1);
    $("btn-copy-next").disabled = !has(p.case_slice + 1);
    $("btn-interpolate").disabled = !this.volume.canInterpolate();
  }

  touched(x0, y0, x1, y1) {
    this.history.touch(x0, y0, x1, y1);
    this.viewer.updateMask(x0, y0, x1, y1);
  }

  closePolygon() {
    if (this.polygon.length >= 3) {
      this.history.begin();
      fillPolygon(this.history.mask, this.viewer.width, this.viewer.height, this.polygon, this.label,
        (...r) => this.touched(...r));
      this.history.commit("polygon");
    }
    this.polygon = [];
    this.viewer.requestRender();
  }

  undo() { const r = this.history?.undo(); if (r) this.viewer.updateMask(r.x0, r.y0, r.x1, r.y1); }
  redo() { const r = this.history?.redo(); if (r) this.viewer.updateMask(r.x0, r.y0, r.x1, r.y1); }

  resetToProposal() {
    if (!this.history || !this.session.proposalMask) return;
    if (this.history.replaceAll(this.session.proposalMask, "reset to proposal")) {
      this.viewer.updateMask(0, 0, this.viewer.width - 1, this.viewer.height - 1);
    }
  }

  historyChanged() {
    const h = this.history;
    $("btn-undo").disabled = !h?.canUndo;
    $("btn-redo").disabled = !h?.canRedo;
    $("btn-reset").disabled = !h || !this.session.proposalMask;
    // visibility, not display: the badge keeps its place, so the header and the image never move mid-edit
    $("dirty").style.visibility = h?.dirty ? "visible" : "hidden";
    $("history-info").textContent = h ? `${h.undoStack.length} undo · ${h.redoStack.length} redo steps` : "";
  }

  setTool(tool) {
    if (this.tool === "polygon" && tool !== "polygon") this.polygon = [];
    this.tool = tool;
    for (const b of document.querySelectorAll(".tool")) b.setAttribute("aria-checked", String(b.dataset.tool === tool));
    this.root.dataset.tool = tool;
    this.viewer.requestRender();
  }

  setBrushSize(size) {
    this.brushSize = Math.max(1, Math.min(64, Math.round(size)));
    $("brush-size").value = String(this.brushSize);
    $("brush-size-out").textContent = String(this.brushSize);
    this.viewer.requestRender();
  }

  setLabel(value) {
    if (!this.labels.some((c) => c.value === value)) return;
    this.label = value;
    for (const b of document.querySelectorAll(".label-btn")) b.setAttribute("aria-checked", String(Number(b.dataset.value) === value));
    if (this.tool === "eraser") this.setTool("brush");
  }

  /** The label colours on screen: the project's, or (the reader's choice, kept in this browser) the
   * Okabe-Ito palette, told apart with any colour vision. */
  displayLabels() {
    if (localStorage.getItem("hitl-colorblind") !== "1") return this.labels;
    return this.labels.map((c, i) => ({ ...c, color: OKABE_ITO[i % OKABE_ITO.length] }));
  }

  applyPalette() {
    const shown = this.displayLabels();
    $("colorblind").checked = shown !== this.labels;
    this.viewer.setColors(shown);
    for (const c of shown) {
      for (const s of document.querySelectorAll(`.swatch[data-value="${c.value}"]`)) s.style.background = c.color;
    }
  }

  /** Orientation letters at the edges of the editor's slice (none for an image without a volume). */
  showMarkers(volume) {
    const box = $("markers");
    box.hidden = !volume || volume.shape[0] < 2;
    if (box.hidden) return;
    const u = volume.unit;
    if (u.slices !== 1) {  // a slab or a whole volume: where this slice lies in the reader's unit of work
      const unit = u.slices === 0 ? "volume" : "slab";
      $("case-title").textContent += ` · ${unit} ${u.first + 1}–${u.last + 1}, ${u.done.length} of ${u.last - u.first + 1} done`;
    }
    for (const side of ["top", "bottom", "left", "right"]) box.querySelector(`.m-${side}`).textContent = volume.slice_markers[side];
  }

  setWindow(center, width) {
    this.viewer.setWindow(center, width);
    this.volume?.render();
    $("wl").textContent = this.viewer.rgb ? "RGB" : `W ${+width.toPrecision(4)} / L ${+center.toPrecision(4)}`;
  }

  // ---- UI -------------------------------------------------------------------------------------------
  setState(state) { this.state = state; this.root.dataset.state = state;
    const ready = state === "ready";
    for (const id of ["btn-submit", "btn-skip", "btn-flag", "btn-release"]) {
      $(id).disabled = !ready || (this.mode === "revise" && id !== "btn-submit");  // a revision holds no lease
    }
    $("empty").hidden = state !== "empty";
  }

  notice(text, kind = "info") {
    const box = $("notice");
    box.hidden = !text;
    box.className = `notice ${kind}`;
    box.textContent = text || "";
    return box;
  }

  buildLabelPicker() {
    const box = $("labels");
    this.labels.forEach((c, i) => {
      const b = document.createElement("button");
      b.type = "button"; b.className = "label-btn"; b.dataset.value = String(c.value);
      b.setAttribute("role", "radio");  // inside the "Label class" radiogroup
      b.setAttribute("aria-checked", String(c.value === this.label));
      b.setAttribute("aria-keyshortcuts", String(i + 1));
      b.innerHTML = `<span class="swatch" data-value="${c.value}" style="background:${c.color}"></span><span></span> <kbd>${i + 1}</kbd>`;
      b.children[1].textContent = c.name;
      b.onclick = () => this.setLabel(c.value);
      box.append(b);
    });
  }

  buildPresets(c) {
    const sel = $("preset");
    sel.replaceChildren();
    const presets = [];
    if (!this.viewer.rgb) {
      presets.push(...(c.window_presets || []));
      for (const p of MODALITY_PRESETS[c.modality] || []) if (!presets.some((q) => q.name === p.name)) presets.push(p);
      presets.push({ name: "Auto (1-99 %)", ...this.viewer.autoWindow() });
      if (this.viewer.stats) {  // the image's whole range, in its own units
        const { min, max } = this.viewer.stats;
        presets.push({ name: "Full range", center: (min + max) / 2, width: Math.max(max - min, 1e-6) });
      }
    }
    // In the image's real units: MR intensities may be fractions, so 3 significant digits, never rounded to 0.
    const num = (v) => (Math.abs(v) >= 100 ? String(Math.round(v)) : String(+v.toPrecision(3)));
    presets.forEach((p, i) => sel.append(new Option(`${p.name} (W ${num(p.width)} / L ${num(p.center)})`, String(i))));
    sel.disabled = this.viewer.rgb;
    this.presets = presets;
    const first = c.modality === "CT" || c.window_presets?.length ? presets[0] : presets[presets.length - 1];
    if (first) { sel.value = String(presets.indexOf(first)); this.setWindow(first.center, first.width); }
    else this.setWindow(127.5, 255);
  }

  renderWhy(p) {
    const why = p.why || {};
    const score = p.score || {};
    // Two different facts, each with its own version: which model's scores put the case in your queue (at
    // claim time), and which model drew the proposal on screen (the active one, or marked stale).
    const ranked = why.model_version ?? score.model_version;
    const proposal = p.proposal ? `v${p.proposal.model_version}${p.proposal.stale ? " (stale: not the active version)" : ""}` : "none";
    const rows = [
      ["strategy", why.strategy || score.strategy || "—"],
      ["score", why.score ?? score.score],
      ["rank", why.rank ?? score.rank],
      ["ranked by", ranked ? `v${ranked}` : "no model yet"],
      ["proposal by", proposal],
      ["active model", p.model_version ? `v${p.model_version.number}` : "none yet"],
    ];
    this.renderKv($("why"), rows.map(([k, v]) => [k, typeof v === "number" ? +v.toPrecision(4) : v ?? "—"]));
  }

  renderCaseInfo(p) {
    const c = p.case;
    this.renderKv($("case-info"), [
      ["modality", c.modality], ["size", `${c.shape[1]} × ${c.shape[0]}${c.channels === 3 ? " RGB" : ""}`],
      ["type", c.dtype], ["spacing", c.spacing ? c.spacing.slice(0, 2).map((v) => +Number(v).toFixed(3)).join(" × ") + " mm" : "—"],
      ["revision", p.head_revision ?? "none yet"],
    ]);
  }

  renderKv(dl, rows) {
    dl.replaceChildren();
    for (const [k, v] of rows) {
      const dt = document.createElement("dt"); dt.textContent = k;
      const dd = document.createElement("dd"); dd.textContent = String(v);
      dl.append(dt, dd);
    }
  }

  renderStats() {
    $("stat-done").textContent = String(this.stats.done);
    $("stat-median").textContent = formatSeconds(median(this.stats.times));
    const agreement = boot.stats.agreement;
    if (agreement) {
      const ci = agreement.ci ? ` (95% CI ${agreement.ci[0].toFixed(2)}–${agreement.ci[1].toFixed(2)})` : "";
      $("stat-agreement").textContent = `Dice ${agreement.mean_dice.toFixed(2)} vs consensus${ci}, ${agreement.cases} cases`;
    }
  }

  afterRender() {
    $("zoom").textContent = `zoom ${Math.round(this.viewer.scale / (this.viewer.dpr || 1) * 100)} %`;
  }

  decorate(ctx) {
    const v = this.viewer;
    ctx.lineWidth = 1.5 * v.dpr;
    if (this.polygon.length) {
      ctx.strokeStyle = "#ffd400";
      ctx.beginPath();
      this.polygon.forEach(([x, y], i) => (i ? ctx.lineTo : ctx.moveTo).call(ctx, x * v.scale + v.tx, y * v.scale + v.ty));
      if (this.hover) ctx.lineTo(this.hover[0] * v.scale + v.tx, this.hover[1] * v.scale + v.ty);
      ctx.stroke();
    }
    if (this.hover && (this.tool === "brush" || this.tool === "eraser")) {
      ctx.strokeStyle = this.tool === "eraser" ? "#fff" : "#ffd400";
      ctx.beginPath();
      ctx.arc(this.hover[0] * v.scale + v.tx, this.hover[1] * v.scale + v.ty, (this.brushSize / 2) * v.scale, 0, 2 * Math.PI);
      ctx.stroke();
    }
  }

  bindControls() {
    $("btn-submit").onclick = () => this.submit();
    $("btn-skip").onclick = () => this.skipOrFlag("skip");
    $("btn-flag").onclick = () => this.skipOrFlag("flag");
    $("btn-release").onclick = () => this.releaseCase();
    $("btn-retry").onclick = () => this.next();
    $("btn-undo").onclick = () => this.undo();
    $("btn-redo").onclick = () => this.redo();
    $("btn-reset").onclick = () => this.resetToProposal();
    $("btn-copy-prev").onclick = () => this.copySlice(-1);
    $("btn-copy-next").onclick = () => this.copySlice(1);
    $("btn-interpolate").onclick = () => this.interpolateSlices();
    $("btn-fit").onclick = () => this.viewer.fit();
    $("btn-zoom-in").onclick = () => this.viewer.zoomAt(1.25, this.viewer.canvas.width / 2, this.viewer.canvas.height / 2);
    $("btn-zoom-out").onclick = () => this.viewer.zoomAt(0.8, this.viewer.canvas.width / 2, this.viewer.canvas.height / 2);
    $("btn-help").onclick = () => this.toggleHelp();
    $("brush-size").oninput = (e) => this.setBrushSize(Number(e.target.value));
    $("colorblind").onchange = (e) => { localStorage.setItem("hitl-colorblind", e.target.checked ? "1" : "0"); this.applyPalette(); };
    $("preset").onchange = (e) => { const p = this.presets[Number(e.target.value)]; if (p) this.setWindow(p.center, p.width); };
    for (const b of document.querySelectorAll(".tool")) b.onclick = () => this.setTool(b.dataset.tool);
  }

  toggleHelp() {
    const dlg = $("dlg-help");
    if (dlg.open) dlg.close(); else { this.shortcuts.renderHelp(document.querySelector("#help-table tbody")); dlg.showModal(); }
  }

  bindShortcuts() {
    const s = (this.shortcuts = new Shortcuts());
    s.add("b", "Brush", () => this.setTool("brush"))
      .add("e", "Eraser", () => this.setTool("eraser"))
      .add("p", "Polygon fill (click points; Enter or click the first point to fill)", () => this.setTool("polygon"))
      .add("o", "Region grow: click; the connected pixels inside the window get the label", () => this.setTool("grow"))
      .add("h", "Pan (or hold the middle mouse button)", () => this.setTool("pan"))
      .add("w", "Window/level drag (or drag with the right mouse button)", () => this.setTool("window"))
      .add("[", "Smaller brush", () => this.setBrushSize(this.brushSize - (this.brushSize > 10 ? 4 : 1)))
      .add("]", "Larger brush", () => this.setBrushSize(this.brushSize + (this.brushSize >= 10 ? 4 : 1)))
      .add(this.labels.slice(0, 9).map((_, i) => String(i + 1)), "Choose label class 1-9", (ev) => this.setLabel(this.labels[Number(ev.key) - 1]?.value))
      .add(["Ctrl+z"], "Undo", () => this.undo())
      .add(["Ctrl+y", "Ctrl+Shift+z"], "Redo", () => this.redo())
      .add("m", "Show/hide the mask", () => this.layers?.toggle("mask"))
      .add("u", "Show/hide the uncertainty map", () => this.layers?.toggle("uncertainty"))
      .add("g", "Show/hide Grad-CAM", () => this.layers?.toggle("gradcam"))
      .add("s", "Show/hide saliency", () => this.layers?.toggle("saliency"))
      .add("f", "Fit the image to the window", () => this.viewer.fit())
      .add(["+", "="], "Zoom in", () => this.viewer.zoomAt(1.25, this.viewer.canvas.width / 2, this.viewer.canvas.height / 2))
      .add("-", "Zoom out", () => this.viewer.zoomAt(0.8, this.viewer.canvas.width / 2, this.viewer.canvas.height / 2))
      .add("r", "Reset the mask to the model's proposal (undoable)", () => this.resetToProposal())
      .add("Enter", "Close the polygon and fill it", () => this.tool === "polygon" && this.closePolygon())
      .add("Escape", "Cancel the polygon / close dialogs", () => { this.polygon = []; this.viewer.requestRender(); })
      .add("Ctrl+Enter", "Submit and open the next case", () => this.submit())
      .add("?", "This help", () => this.toggleHelp());
  }
}

Object.assign(Editor.prototype, leaseMethods, recentMethods);

const editor = new Editor();
window.hitlEditor = editor;  // for debugging and the browser tests
editor.next();
editor.refreshRecent();
