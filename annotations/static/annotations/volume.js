// The volume panel (issue 19): the case's image in 3D context beside the editor. One read-only view at a
// time (axial, coronal or sagittal, laid out as radiologists read them by GET /cases/{id}/volume), with
// orientation markers from the image's direction cosines and the physical aspect of its spacing. The wheel,
// the arrow keys (Page Up/Down: 10) and the slider scroll through the planes; a cross-hair marks the
// cursor, a click moves it (the other views follow), and "This case" goes back to the case's own slice,
// which the editor paints. Every view draws the labels the reader may see. Planes load lazily,
// are cached (LRU) and the ones around the cursor are prefetched; window/level is the editor's.
import { getPixels, getPngValues } from "./api.js";

const CACHE = 192;  // planes kept
const PREFETCH = 4;  // planes ahead of and behind the cursor

export class VolumePanel {
  constructor(root, { getWindow, getColors }) {
    this.root = root;
    this.canvas = root.querySelector("canvas");
    this.ctx = this.canvas.getContext("2d");
    this.slider = root.querySelector("input[type=range]");
    this.info = root.querySelector(".volume-info");
    this.tabs = root.querySelector(".volume-views");
    this.getWindow = getWindow;
    this.getColors = getColors;
    this.cache = new Map();  // key -> Promise of {shape, data} or label values (null: none)
    this.frameTimes = [];  // ms to draw each plane
    this.latencies = [];  // ms from a scroll (wheel, key, slider) to its plane on screen
    this.firstSlice = null;  // {sinceOpenMs, sinceNavigationMs} of the first plane drawn for a case
    this.bind();
  }

  async open(caseId) {
    this.opened = performance.now();
    this.firstSlice = null;
    this.caseId = caseId;
    this.cache.clear();
    this.payload = null;
    let payload = null;
    try {
      const resp = await fetch(`/api/v1/cases/${caseId}/volume`, { credentials: "same-origin" });
      if (resp.ok) payload = await resp.json();
    } catch { payload = null; }  // the panel is an extra: the editor works without it
    if (this.caseId !== caseId) return;  // another case opened meanwhile: its own open() shows it
    if (!payload) { this.root.hidden = true; return; }
    this.payload = payload;
    this.root.hidden = payload.shape[0] < 2;  // a single image has no volume to scroll
    if (this.root.hidden) return;
    this.cursor = [...payload.cursor];
    this.labelled = new Set(payload.labelled_slices);
    this.tabs.replaceChildren(...Object.keys(payload.views).map((name) => {
      const b = document.createElement("button");
      b.type = "button"; b.className = "secondary small"; b.dataset.view = name; b.textContent = name;
      b.onclick = () => this.show(name);
      return b;
    }));
    await this.show(payload.acquired_view);
  }

  get spec() { return this.payload.views[this.view]; }
  get index() { return this.cursor[this.spec.normal_axis]; }

  async show(view) {
    this.view = view;
    for (const b of this.tabs.children) b.setAttribute("aria-pressed", String(b.dataset.view === view));
    this.slider.max = String(this.spec.count - 1);
    this.root.dataset.view = view;
    await this.render();
  }

  /** Move the cursor to plane `index` of the current view (clamped) and draw it. */
  async go(index) {
    const i = Math.max(0, Math.min(this.spec.count - 1, index));
    if (i === this.index && this.root.dataset.index === String(i)) return;
    this.cursor[this.spec.normal_axis] = i;
    this.asked = performance.now();
    await this.render();
  }

  fetchOnce(key, load) {
    if (this.cache.has(key)) {
      const hit = this.cache.get(key);
      this.cache.delete(key); this.cache.set(key, hit);  // most recently used last
      return hit;
    }
    const promise = load().catch(() => null);
    this.cache.set(key, promise);
    while (this.cache.size > CACHE) this.cache.delete(this.cache.keys().next().value);
    return promise;
  }

  plane(view, index) {
    return this.fetchOnce(`${view}/${index}`, () => getPixels(`/api/v1/cases/${this.caseId}/volume/${view}/${index}`));
  }

  label(view, index, shape) {
    const acquired = this.payload.views[view].normal_axis === 0;  // across the slices: every labelled one's row
    if (acquired ? !this.labelled.has(index) : !this.labelled.size) return Promise.resolve(null);
    const url = `/api/v1/cases/${this.caseId}/volume/${view}/${index}/label.png`;
    return this.fetchOnce(`${view}/${index}/label`, () => getPngValues(url, shape[1], shape[0]));
  }

  /** Slice `index`'s label in the stored (the editor's) layout; null when there is none the reader may see. */
  async storedLabel(index) {
    if (!this.payload || !this.labelled.has(index)) return null;
    const [, h, w] = this.payload.shape;
    const url = `/api/v1/cases/${this.caseId}/volume/${this.payload.acquired_view}/${index}/label.png?layout=stored`;
    return getPngValues(url, w, h);
  }

  canInterpolate() {
    if (!this.payload) return false;
    const k = this.payload.case_slice, done = [...this.labelled];
    return done.some((i) => i < k) && done.some((i) => i > k);
  }

  /** {values, from: "a,b"}: a label for the case's slice interpolated between its labelled neighbours. */
  async interpolated() {
    if (!this.canInterpolate()) return null;
    const resp = await fetch(`/api/v1/cases/${this.caseId}/volume/interpolated.png`, { credentials: "same-origin" });
    if (!resp.ok) return null;
    const [, h, w] = this.payload.shape;
    const url = URL.createObjectURL(await resp.blob());
    try { return { values: await getPngValues(url, w, h), from: resp.headers.get("X-From-Slices") }; }
    finally { URL.revokeObjectURL(url); }
  }

  prefetch() {
    for (let d = 1; d <= PREFETCH; d++) {
      for (const i of [this.index + d, this.index - d]) if (i >= 0 && i < this.spec.count) this.plane(this.view, i);
    }
  }

  async render() {
    if (!this.payload || this.root.hidden) return;
    const view = this.view, index = this.index, caseId = this.caseId;
    const pixels = await this.plane(view, index);
    const mask = pixels ? await this.label(view, index, pixels.shape) : null;
    if (view !== this.view || index !== this.index || caseId !== this.caseId || !pixels) return;  // moved on
    const t0 = performance.now();
    this.draw(pixels, mask);
    const t1 = performance.now();
    this.frameTimes.push(t1 - t0);
    if (this.asked !== null && this.asked !== undefined) { this.latencies.push(t1 - this.asked); this.asked = null; }
    this.firstSlice ??= { sinceOpenMs: t1 - this.opened, sinceNavigationMs: t1 };
    this.slider.value = String(index);
    this.root.dataset.index = String(index);
    const own = this.spec.normal_axis === 0 && index === this.payload.case_slice;
    this.info.textContent = `${view} ${index + 1} / ${this.spec.count}` + (own ? " · this case's slice" : "")
      + (mask ? " · labelled" : "");
    this.prefetch();
  }

  draw(pixels, mask) {
    const [h, w] = pixels.shape;
    const img = new ImageData(w, h);
    const out = img.data, d = pixels.data;
    const win = this.getWindow() || { center: 127.5, width: 255 };
    const lo = win.center - win.width / 2, k = 255 / win.width;
    const colors = mask ? this.getColors() : null;
    for (let i = 0; i < w * h; i++) {
      let v = (d[i] - lo) * k;
      v = v < 0 ? 0 : v > 255 ? 255 : v;
      const c = colors && mask[i] ? colors[mask[i]] : null;
      const o = i * 4;
      if (c) { out[o] = (v + c[0]) / 2; out[o + 1] = (v + c[1]) / 2; out[o + 2] = (v + c[2]) / 2; }
      else { out[o] = out[o + 1] = out[o + 2] = v; }
      out[o + 3] = 255;
    }
    const dpr = window.devicePixelRatio || 1;
    const r = this.canvas.getBoundingClientRect();
    this.canvas.width = Math.max(1, Math.floor(r.width * dpr));
    this.canvas.height = Math.max(1, Math.floor(r.height * dpr));
    const [rowMm, colMm] = this.spec.spacing;
    const s = Math.min(this.canvas.width / (w * colMm), this.canvas.height / (h * rowMm));  // px per mm
    const dw = w * colMm * s, dh = h * rowMm * s;
    this.box = { x: (this.canvas.width - dw) / 2, y: (this.canvas.height - dh) / 2, dw, dh, w, h };
    const ctx = this.ctx;
    ctx.fillStyle = "#000"; ctx.fillRect(0, 0, this.canvas.width, this.canvas.height);
    const off = new OffscreenCanvas(w, h);
    off.getContext("2d").putImageData(img, 0, 0);
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(off, this.box.x, this.box.y, dw, dh);
    this.drawCrosshair(dpr);
    this.drawMarkers(dpr);
  }

  /** The cursor's position in the shown plane: (row, col) from the array indices, as the layout turns them. */
  cursorInPlane() {
    const { rows, cols } = this.spec;
    const n = this.payload.shape;
    const at = (a) => (a.flip ? n[a.axis] - 1 - this.cursor[a.axis] : this.cursor[a.axis]);
    return [at(rows), at(cols)];
  }

  drawCrosshair(dpr) {
    const [row, col] = this.cursorInPlane();
    const { x, y, dw, dh, w, h } = this.box;
    const cx = x + (col + 0.5) * dw / w, cy = y + (row + 0.5) * dh / h;
    const ctx = this.ctx;
    ctx.strokeStyle = "rgba(255, 212, 0, 0.7)"; ctx.lineWidth = dpr;
    ctx.beginPath(); ctx.moveTo(x, cy); ctx.lineTo(x + dw, cy); ctx.moveTo(cx, y); ctx.lineTo(cx, y + dh); ctx.stroke();
  }

  drawMarkers(dpr) {
    const m = this.spec.markers;
    const { x, y, dw, dh } = this.box;
    const ctx = this.ctx;
    ctx.fillStyle = "#ffd400"; ctx.font = `${12 * dpr}px sans-serif`;
    ctx.textAlign = "center"; ctx.textBaseline = "top"; ctx.fillText(m.top, x + dw / 2, y + 2 * dpr);
    ctx.textBaseline = "bottom"; ctx.fillText(m.bottom, x + dw / 2, y + dh - 2 * dpr);
    ctx.textBaseline = "middle"; ctx.textAlign = "left"; ctx.fillText(m.left, x + 2 * dpr, y + dh / 2);
    ctx.textAlign = "right"; ctx.fillText(m.right, x + dw - 2 * dpr, y + dh / 2);
    this.root.dataset.markers = [m.top, m.bottom, m.left, m.right].join("");
  }

  /** A click: the cursor moves to that point of the plane (the other views' planes follow). */
  pointAt(clientX, clientY) {
    if (!this.box) return;
    const r = this.canvas.getBoundingClientRect();
    const px = (clientX - r.left) * (this.canvas.width / r.width), py = (clientY - r.top) * (this.canvas.height / r.height);
    const { x, y, dw, dh, w, h } = this.box;
    const col = Math.floor((px - x) / dw * w), row = Math.floor((py - y) / dh * h);
    if (col < 0 || row < 0 || col >= w || row >= h) return;
    const n = this.payload.shape;
    const set = (a, v) => { this.cursor[a.axis] = a.flip ? n[a.axis] - 1 - v : v; };
    set(this.spec.rows, row); set(this.spec.cols, col);
    this.render();
  }

  bind() {
    this.canvas.addEventListener("wheel", (ev) => {
      if (!this.payload) return;
      ev.preventDefault();
      this.go(this.index + (ev.deltaY > 0 ? 1 : -1));
    }, { passive: false });
    this.canvas.addEventListener("keydown", (ev) => {
      const step = { ArrowDown: 1, ArrowRight: 1, ArrowUp: -1, ArrowLeft: -1, PageDown: 10, PageUp: -10 }[ev.key];
      if (step === undefined || !this.payload) return;
      ev.preventDefault(); ev.stopPropagation();  // the editor's own shortcuts stay with the main view
      this.go(this.index + step);
    });
    this.canvas.addEventListener("click", (ev) => this.pointAt(ev.clientX, ev.clientY));
    this.slider.addEventListener("input", () => this.go(Number(this.slider.value)));
    this.root.querySelector(".volume-home").addEventListener("click", async () => {
      this.cursor = [...this.payload.cursor];
      await this.show(this.payload.acquired_view);
    });
  }
}
