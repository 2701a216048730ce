// The image viewer: windowed grey (8/16-bit/float) or RGB pixels, the label mask and overlay layers,
// drawn into offscreen canvases at image resolution and composited to the screen with zoom and pan.
// Painting only touches the mask's dirty rectangle; the screen is redrawn once per animation frame.

export const MODALITY_PRESETS = {
  CT: [
    { name: "Soft tissue", center: 40, width: 400 },
    { name: "Lung", center: -600, width: 1500 },
    { name: "Bone", center: 400, width: 1800 },
    { name: "Brain", center: 40, width: 80 },
  ],
};

function hexToRgb(hex) {
  const n = parseInt(hex.slice(1), 16);
  return [(n >> 16) & 255, (n >> 8) & 255, n & 255];
}

export class Viewer {
  constructor(canvas, onRender = () => {}) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.onRender = onRender;
    this.scale = 1; this.tx = 0; this.ty = 0;
    this.overlays = [];
    this.maskVisible = true;
    this.maskOpacity = 0.5;
    this.maskStyle = "fill";  // or "outline": only the pixels on a label's border
    this.hiddenLabels = new Set();  // label values not drawn (the mask itself is unchanged)
    this.decorate = null;  // (ctx, viewer) -> void, screen-space extras (brush cursor, polygon)
    this.frameRequested = false;
    this.lastFrameMs = 0;
    new ResizeObserver(() => this.resize()).observe(canvas);
    this.resize();
  }

  resize() {
    const r = this.canvas.getBoundingClientRect();
    const dpr = window.devicePixelRatio || 1;
    this.canvas.width = Math.max(1, Math.floor(r.width * dpr));
    this.canvas.height = Math.max(1, Math.floor(r.height * dpr));
    this.dpr = dpr;
    if (this.image && !this.userMoved) this.fit();
    this.requestRender();
  }

  /** pixels: {shape:[H,W(,3)], data}; mask: Uint8Array(H*W); labels: [{value,color}]. */
  setImage(pixels, mask, labels) {
    const [h, w] = pixels.shape;
    this.width = w; this.height = h;
    this.rgb = pixels.shape.length === 3 && pixels.shape[2] === 3;
    this.image = pixels;
    this.mask = mask;
    this.setColors(labels);
    this.base = new OffscreenCanvas(w, h);
    this.baseCtx = this.base.getContext("2d");
    this.maskCanvas = new OffscreenCanvas(w, h);
    this.maskCtx = this.maskCanvas.getContext("2d");
    this.maskData = this.maskCtx.createImageData(w, h);
    this.overlays = [];
    this.dirty = null;
    this.stats = this.rgb ? null : this._stats();
    this.userMoved = false;
    this.fit();
    this.updateMask(0, 0, w - 1, h - 1);
  }

  _stats() {
    const d = this.image.data;
    const step = Math.max(1, Math.floor(d.length / 65536));
    const sample = [];
    for (let i = 0; i < d.length; i += step) sample.push(d[i]);
    sample.sort((a, b) => a - b);
    const q = (p) => sample[Math.min(sample.length - 1, Math.floor(p * (sample.length - 1)))];
    return { p1: q(0.01), p99: q(0.99), min: sample[0], max: sample[sample.length - 1] };
  }

  autoWindow() {
    if (!this.stats) return { center: 127.5, width: 255 };
    const lo = this.stats.p1;
    const hi = this.stats.p99 > lo ? this.stats.p99 : lo + 1;
    return { center: (lo + hi) / 2, width: hi - lo };
  }

  setWindow(center, width) {
    this.window = { center, width: Math.max(width, 1e-6) };
    this._renderBase();
    this.requestRender();
  }

  _renderBase() {
    const { width: w, height: h } = this;
    const img = this.baseCtx.createImageData(w, h);
    const out = img.data;
    const d = this.image.data;
    if (this.rgb) {
      for (let i = 0, j = 0; i < w * h; i++, j += 3) {
        out[i * 4] = d[j]; out[i * 4 + 1] = d[j + 1]; out[i * 4 + 2] = d[j + 2]; out[i * 4 + 3] = 255;
      }
    } else {
      const lo = this.window.center - this.window.width / 2;
      const k = 255 / this.window.width;
      for (let i = 0; i < w * h; i++) {
        let v = (d[i] - lo) * k;
        v = v < 0 ? 0 : v > 255 ? 255 : v;
        out[i * 4] = out[i * 4 + 1] = out[i * 4 + 2] = v; out[i * 4 + 3] = 255;
      }
    }
    this.baseCtx.putImageData(img, 0, 0);
  }

  /** Mark the rectangle [x0..x1] x [y0..y1] (image pixels, inclusive) of the mask as changed. The
   * re-colouring happens once per animation frame, so pointer events only write the typed array. */
  updateMask(x0, y0, x1, y1) {
    const d = this.dirty;
    this.dirty = d ? { x0: Math.min(d.x0, x0), y0: Math.min(d.y0, y0), x1: Math.max(d.x1, x1), y1: Math.max(d.y1, y1) }
      : { x0, y0, x1, y1 };
    this.requestRender();
  }

  _flushMask() {
    if (!this.dirty) return;
    let { x0, y0, x1, y1 } = this.dirty;
    this.dirty = null;
    // One pixel more on every side: an edit changes whether its neighbours lie on a border (outline mode).
    x0 = Math.max(0, Math.floor(x0) - 1); y0 = Math.max(0, Math.floor(y0) - 1);
    x1 = Math.min(this.width - 1, Math.ceil(x1) + 1); y1 = Math.min(this.height - 1, Math.ceil(y1) + 1);
    if (x1 < x0 || y1 < y0) return;
    const out = this.maskData.data;
    const { mask, width: w, height: h } = this;
    const outline = this.maskStyle === "outline";
    for (let y = y0; y <= y1; y++) {
      for (let x = x0; x <= x1; x++) {
        const i = y * w + x;
        const v = mask[i];
        const c = this.hiddenLabels.has(v) ? null : this.colors[v];
        const o = i * 4;
        const edge = !outline || x === 0 || y === 0 || x === w - 1 || y === h - 1
          || mask[i - 1] !== v || mask[i + 1] !== v || mask[i - w] !== v || mask[i + w] !== v;
        if (c && edge) { out[o] = c[0]; out[o + 1] = c[1]; out[o + 2] = c[2]; out[o + 3] = 255; } else out[o + 3] = 0;
      }
    }
    this.maskCtx.putImageData(this.maskData, 0, 0, x0, y0, x1 - x0 + 1, y1 - y0 + 1);
  }

  /** Fill or outline, and which label values to hide: the whole mask is recoloured. */
  /** Label colours ([{value, color}]); redraws the mask when an image is shown. */
  setColors(labels) {
    this.colors = new Array(256).fill(null);
    for (const c of labels) this.colors[c.value] = hexToRgb(c.color);
    if (this.maskData) this.updateMask(0, 0, this.width - 1, this.height - 1);
  }

  setMaskStyle({ style = this.maskStyle, hidden = this.hiddenLabels } = {}) {
    this.maskStyle = style;
    this.hiddenLabels = new Set(hidden);
    if (this.image) this.updateMask(0, 0, this.width - 1, this.height - 1);
  }

  /** An overlay from 8-bit values: colormap(v) -> [r,g,b,a]. Returns the overlay record. */
  addOverlay(id, values, colormap, opts = {}) {
    const c = new OffscreenCanvas(this.width, this.height);
    const ctx = c.getContext("2d");
    const img = ctx.createImageData(this.width, this.height);
    const lut = Array.from({ length: 256 }, (_, v) => colormap(v));
    for (let i = 0; i < values.length; i++) {
      const [r, g, b, a] = lut[values[i]];
      img.data[i * 4] = r; img.data[i * 4 + 1] = g; img.data[i * 4 + 2] = b; img.data[i * 4 + 3] = a;
    }
    ctx.putImageData(img, 0, 0);
    const overlay = { id, canvas: c, values, visible: !!opts.visible, opacity: opts.opacity ?? 0.6 };
    this.overlays.push(overlay);
    this.requestRender();
    return overlay;
  }

  /** Redraw an overlay's values with another colormap (e.g. a new threshold). */
  recolorOverlay(overlay, colormap) {
    const ctx = overlay.canvas.getContext("2d");
    const img = ctx.createImageData(this.width, this.height);
    const lut = Array.from({ length: 256 }, (_, v) => colormap(v));
    const values = overlay.values;
    for (let i = 0; i < values.length; i++) {
      const [r, g, b, a] = lut[values[i]];
      img.data[i * 4] = r; img.data[i * 4 + 1] = g; img.data[i * 4 + 2] = b; img.data[i * 4 + 3] = a;
    }
    ctx.putImageData(img, 0, 0);
    this.requestRender();
  }

  fit() {
    if (!this.image) return;
    const s = Math.min(this.canvas.width / this.width, this.canvas.height / this.height) * 0.96;
    this.scale = s;
    this.tx = (this.canvas.width - this.width * s) / 2;
    this.ty = (this.canvas.height - this.height * s) / 2;
    this.userMoved = false;
    this.requestRender();
  }

  zoomAt(factor, sx, sy) {
    const s = Math.min(64, Math.max(0.05, this.scale * factor));
    const f = s / this.scale;
    this.tx = sx - (sx - this.tx) * f;
    this.ty = sy - (sy - this.ty) * f;
    this.scale = s;
    this.userMoved = true;
    this.requestRender();
  }

  panBy(dx, dy) {
    this.tx += dx; this.ty += dy; this.userMoved = true;
    this.requestRender();
  }

  /** Client (CSS px) -> canvas device px. */
  toCanvas(clientX, clientY) {
    const r = this.canvas.getBoundingClientRect();
    return [(clientX - r.left) * (this.canvas.width / r.width), (clientY - r.top) * (this.canvas.height / r.height)];
  }

  /** Client (CSS px) -> image coordinates (float, pixel centres at .5). */
  toImage(clientX, clientY) {
    const [cx, cy] = this.toCanvas(clientX, clientY);
    return [(cx - this.tx) / this.scale, (cy - this.ty) / this.scale];
  }

  /** Image coordinates -> client (CSS px); for tests and the brush outline. */
  toClient(x, y) {
    const r = this.canvas.getBoundingClientRect();
    const kx = r.width / this.canvas.width;
    const ky = r.height / this.canvas.height;
    return [r.left + (x * this.scale + this.tx) * kx, r.top + (y * this.scale + this.ty) * ky];
  }

  valueAt(x, y) {
    if (x < 0 || y < 0 || x >= this.width || y >= this.height) return null;
    const i = Math.floor(y) * this.width + Math.floor(x);
    if (this.rgb) return Array.from(this.image.data.subarray(i * 3, i * 3 + 3));
    return this.image.data[i];
  }

  requestRender() {
    if (this.frameRequested) return;
    this.frameRequested = true;
    requestAnimationFrame(() => { this.frameRequested = false; this.render(); });
  }

  render() {
    const t0 = performance.now();
    const ctx = this.ctx;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, this.canvas.width, this.canvas.height);
    if (this.image) {
      this._flushMask();
      ctx.setTransform(this.scale, 0, 0, this.scale, this.tx, this.ty);
      ctx.imageSmoothingEnabled = this.scale < 1;
      ctx.drawImage(this.base, 0, 0);
      ctx.imageSmoothingEnabled = false;
      for (const o of this.overlays) {
        if (!o.visible) continue;
        ctx.globalAlpha = o.opacity;
        ctx.drawImage(o.canvas, 0, 0);
      }
      if (this.maskVisible) {
        ctx.globalAlpha = this.maskOpacity;
        ctx.drawImage(this.maskCanvas, 0, 0);
      }
      ctx.globalAlpha = 1;
      ctx.setTransform(1, 0, 0, 1, 0, 0);
      if (this.decorate) this.decorate(ctx, this);
    }
    this.lastFrameMs = performance.now() - t0;
    this.onRender(this);
  }
}
