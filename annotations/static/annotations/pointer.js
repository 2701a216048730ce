// Mouse/pen input on the viewer canvas: paint, polygon points, pan, zoom, window/level, and the pixel
// readout. Uses coalesced pointer events so fast strokes keep every sample without extra redraws.

export function setupPointer(editor) {
  const v = editor.viewer;
  const canvas = v.canvas;
  const $ = (id) => document.getElementById(id);
  let drag = null;  // {mode: "paint"|"pan"|"window", x, y, start}
  let spaceDown = false;

  document.addEventListener("keydown", (e) => { if (e.code === "Space" && e.target === canvas) { spaceDown = true; e.preventDefault(); } });
  document.addEventListener("keyup", (e) => { if (e.code === "Space") spaceDown = false; });
  canvas.addEventListener("contextmenu", (e) => e.preventDefault());

  canvas.addEventListener("pointerdown", (e) => {
    if (!editor.history || editor.state !== "ready") return;
    canvas.focus();
    canvas.setPointerCapture(e.pointerId);
    const [x, y] = v.toImage(e.clientX, e.clientY);
    const tool = editor.tool;
    if (e.button === 1 || spaceDown || (e.button === 0 && tool === "pan")) {
      drag = { mode: "pan", x: e.clientX, y: e.clientY };
    } else if (e.button === 2 || (e.button === 0 && tool === "window")) {
      drag = { mode: "window", x: e.clientX, y: e.clientY, start: { ...v.window } };
    } else if (e.button === 0 && tool === "grow") {
      editor.grow(x, y);
    } else if (e.button === 0 && tool === "polygon") {
      const first = editor.polygon[0];
      const near = first && Math.hypot((first[0] - x) * v.scale, (first[1] - y) * v.scale) < 8 * v.dpr;
      if (near && editor.polygon.length >= 3) editor.closePolygon();
      else editor.polygon.push([x, y]);
      v.requestRender();
    } else if (e.button === 0) {
      drag = { mode: "paint" };
      editor.beginStroke(x, y);
    }
  });

  canvas.addEventListener("pointermove", (e) => {
    if (!v.image) return;
    const [x, y] = v.toImage(e.clientX, e.clientY);
    editor.hover = [x, y];
    const value = v.valueAt(x, y);
    $("cursor").textContent = value == null ? "x — y —" : `x ${Math.floor(x)} y ${Math.floor(y)}`;
    $("value").textContent = value == null ? "value —"
      : `value ${Array.isArray(value) ? value.join(", ") : +Number(value).toPrecision(5)}`
        + ` · label ${editor.history ? editor.history.mask[Math.floor(y) * v.width + Math.floor(x)] : "—"}`;
    if (!drag) { v.requestRender(); return; }
    if (drag.mode === "paint") {
      const events = e.getCoalescedEvents ? e.getCoalescedEvents() : [e];
      for (const ce of events.length ? events : [e]) {
        const [cx, cy] = v.toImage(ce.clientX, ce.clientY);
        editor.continueStroke(cx, cy);
      }
    } else if (drag.mode === "pan") {
      v.panBy((e.clientX - drag.x) * v.dpr, (e.clientY - drag.y) * v.dpr);
      drag.x = e.clientX; drag.y = e.clientY;
    } else if (drag.mode === "window" && !v.rgb) {
      // Horizontal drag: width; vertical: level. Sensitivity scales with the image's value range.
      const range = v.stats ? Math.max(1, v.stats.max - v.stats.min) : 255;
      const k = range / 400;
      const width = Math.max(k, drag.start.width + (e.clientX - drag.x) * k);
      const center = drag.start.center - (e.clientY - drag.y) * k;
      editor.setWindow(center, width);
    }
  });

  const end = (e) => {
    if (drag?.mode === "paint") editor.endStroke();
    drag = null;
    if (canvas.hasPointerCapture(e.pointerId)) canvas.releasePointerCapture(e.pointerId);
  };
  canvas.addEventListener("pointerup", end);
  canvas.addEventListener("pointercancel", end);
  canvas.addEventListener("pointerleave", () => { editor.hover = null; v.requestRender(); });
  canvas.addEventListener("dblclick", () => { if (editor.tool === "polygon") editor.closePolygon(); });

  canvas.addEventListener("wheel", (e) => {
    e.preventDefault();
    const [sx, sy] = v.toCanvas(e.clientX, e.clientY);
    v.zoomAt(Math.exp(-e.deltaY * 0.0015), sx, sy);
  }, { passive: false });
}
