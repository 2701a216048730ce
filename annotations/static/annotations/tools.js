// Mask editing primitives on a Uint8Array label mask (row-major, width x height). Pure functions: they
// change `mask` and report the touched rectangle through `touch(x0, y0, x1, y1)`.

/** A filled disc of diameter `size` centred at (cx, cy) (image coords, pixel centres at +0.5); with
 * `allow(i)`, only the pixels it accepts (the window-bounded brush: pixels whose value lies in the window). */
export function dab(mask, width, height, cx, cy, size, value, touch, allow = null) {
  const r = Math.max(0.5, size / 2);
  const x0 = Math.max(0, Math.floor(cx - r));
  const x1 = Math.min(width - 1, Math.ceil(cx + r));
  const y0 = Math.max(0, Math.floor(cy - r));
  const y1 = Math.min(height - 1, Math.ceil(cy + r));
  if (x1 < x0 || y1 < y0) return;
  const r2 = r * r;
  for (let y = y0; y <= y1; y++) {
    const dy = y + 0.5 - cy;
    const row = y * width;
    for (let x = x0; x <= x1; x++) {
      const dx = x + 0.5 - cx;
      if (dx * dx + dy * dy <= r2 && (!allow || allow(row + x))) mask[row + x] = value;
    }
  }
  touch(x0, y0, x1, y1);
}

/** Dabs along the segment (ax, ay) -> (bx, by), spaced so the stroke has no gaps. */
export function stroke(mask, width, height, ax, ay, bx, by, size, value, touch, allow = null) {
  const dist = Math.hypot(bx - ax, by - ay);
  const step = Math.max(0.5, size / 4);
  const n = Math.max(1, Math.ceil(dist / step));
  for (let i = 1; i <= n; i++) {
    const t = i / n;
    dab(mask, width, height, ax + (bx - ax) * t, ay + (by - ay) * t, size, value, touch, allow);
  }
}

/** Fill the polygon (even-odd rule, pixel centres) with `value`. points: [[x, y], ...] image coords. */
export function fillPolygon(mask, width, height, points, value, touch) {
  if (points.length < 3) return false;
  const ys = points.map((p) => p[1]);
  const y0 = Math.max(0, Math.floor(Math.min(...ys)));
  const y1 = Math.min(height - 1, Math.ceil(Math.max(...ys)));
  let any = false;
  for (let y = y0; y <= y1; y++) {
    const sy = y + 0.5;
    const xs = [];
    for (let i = 0, j = points.length - 1; i < points.length; j = i++) {
      const [xi, yi] = points[i];
      const [xj, yj] = points[j];
      if ((yi > sy) !== (yj > sy)) xs.push(xi + ((sy - yi) / (yj - yi)) * (xj - xi));
    }
    xs.sort((a, b) => a - b);
    for (let k = 0; k + 1 < xs.length; k += 2) {
      const xa = Math.max(0, Math.ceil(xs[k] - 0.5));
      const xb = Math.min(width - 1, Math.floor(xs[k + 1] - 0.5));
      if (xb < xa) continue;
      mask.fill(value, y * width + xa, y * width + xb + 1);
      touch(xa, y, xb, y);
      any = true;
    }
  }
  return any;
}

/** Region growing bounded by the window: from the seed (x, y), every 4-connected pixel whose value lies in
 * [lo, hi] gets `value` (nothing when the seed itself is outside). Returns the number of pixels set. */
export function regionGrow(mask, pixels, width, height, x, y, lo, hi, value, touch) {
  const sx = Math.floor(x), sy = Math.floor(y);
  if (sx < 0 || sy < 0 || sx >= width || sy >= height) return 0;
  const inside = (i) => pixels[i] >= lo && pixels[i] <= hi;
  const seed = sy * width + sx;
  if (!inside(seed)) return 0;
  const seen = new Uint8Array(width * height);
  const stack = [seed];
  seen[seed] = 1;
  let n = 0, x0 = sx, x1 = sx, y0 = sy, y1 = sy;
  while (stack.length) {
    const i = stack.pop();
    mask[i] = value; n++;
    const px = i % width, py = (i - px) / width;
    if (px < x0) x0 = px; if (px > x1) x1 = px; if (py < y0) y0 = py; if (py > y1) y1 = py;
    for (const j of [px > 0 ? i - 1 : -1, px < width - 1 ? i + 1 : -1, py > 0 ? i - width : -1, py < height - 1 ? i + width : -1]) {
      if (j >= 0 && !seen[j] && inside(j)) { seen[j] = 1; stack.push(j); }
    }
  }
  touch(x0, y0, x1, y1);
  return n;
}
