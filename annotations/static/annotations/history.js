// Undo/redo for the label mask. Each step stores only the changed rectangle (before and after), so
// hundreds of steps on a 512x512 mask stay small. The state the case was opened with is the floor:
// undo never goes below it, so it can never wipe everything.

export const MAX_STEPS = 200;

export class History {
  constructor(mask, width, height, onChange = () => {}) {
    this.mask = mask;
    this.width = width;
    this.height = height;
    this.undoStack = [];
    this.redoStack = [];
    this.onChange = onChange;
    this.snapshot = new Uint8Array(mask.length);
    this.open = null;
    this.truncated = false;
  }

  /** Call before changing pixels; then `touch(x0, y0, x1, y1)` for every change, then `commit(label)`. */
  begin() {
    this.snapshot.set(this.mask);
    this.open = { x0: Infinity, y0: Infinity, x1: -Infinity, y1: -Infinity };
  }

  touch(x0, y0, x1, y1) {
    const o = this.open;
    if (!o) return;
    o.x0 = Math.max(0, Math.min(o.x0, x0));
    o.y0 = Math.max(0, Math.min(o.y0, y0));
    o.x1 = Math.min(this.width - 1, Math.max(o.x1, x1));
    o.y1 = Math.min(this.height - 1, Math.max(o.y1, y1));
  }

  commit(label = "edit") {
    const o = this.open;
    this.open = null;
    if (!o || o.x1 < o.x0 || o.y1 < o.y0) return false;
    const w = o.x1 - o.x0 + 1;
    const h = o.y1 - o.y0 + 1;
    const before = new Uint8Array(w * h);
    const after = new Uint8Array(w * h);
    let changed = 0;
    for (let y = 0; y < h; y++) {
      const row = (o.y0 + y) * this.width + o.x0;
      before.set(this.snapshot.subarray(row, row + w), y * w);
      after.set(this.mask.subarray(row, row + w), y * w);
    }
    for (let i = 0; i < before.length; i++) if (before[i] !== after[i]) changed++;
    if (!changed) return false;
    this.undoStack.push({ x: o.x0, y: o.y0, w, h, before, after, label, changed });
    if (this.undoStack.length > MAX_STEPS) {
      this.undoStack.shift();
      this.truncated = true;  // the opened state is no longer reachable: stay "unsaved"
    }
    this.redoStack = [];
    this.onChange();
    return true;
  }

  /** Replace the whole mask as one undoable step (reset to proposal, load another revision). */
  replaceAll(values, label) {
    this.begin();
    this.mask.set(values);
    this.touch(0, 0, this.width - 1, this.height - 1);
    return this.commit(label);
  }

  _apply(step, which) {
    const src = step[which];
    for (let y = 0; y < step.h; y++) {
      this.mask.set(src.subarray(y * step.w, (y + 1) * step.w), (step.y + y) * this.width + step.x);
    }
    return { x0: step.x, y0: step.y, x1: step.x + step.w - 1, y1: step.y + step.h - 1 };
  }

  undo() {
    const step = this.undoStack.pop();
    if (!step) return null;
    this.redoStack.push(step);
    const rect = this._apply(step, "before");
    this.onChange();
    return rect;
  }

  redo() {
    const step = this.redoStack.pop();
    if (!step) return null;
    this.undoStack.push(step);
    const rect = this._apply(step, "after");
    this.onChange();
    return rect;
  }

  get canUndo() { return this.undoStack.length > 0; }
  get canRedo() { return this.redoStack.length > 0; }
  get dirty() { return this.undoStack.length > 0 || this.truncated; }
}
