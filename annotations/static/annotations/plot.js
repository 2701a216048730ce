// A small dependency-free SVG line plot for the learning curve (Dice against labelled cases).

const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);

export function learningCurveSvg(points, { width = 520, height = 260 } = {}) {
  const pts = points.filter((p) => p.labelled_cases != null);
  if (!pts.length) return '<p class="muted">No versions with metrics yet.</p>';
  const m = { l: 44, r: 12, t: 12, b: 36 };
  const xs = pts.map((p) => p.labelled_cases);
  const x0 = Math.min(...xs);
  const x1 = Math.max(...xs) > x0 ? Math.max(...xs) : x0 + 1;
  const X = (v) => m.l + ((v - x0) / (x1 - x0)) * (width - m.l - m.r);
  const Y = (v) => height - m.b - v * (height - m.t - m.b);
  const series = [
    { key: "validation_dice", name: "validation Dice", color: "#0b5cad" },
    { key: "test_dice", name: "test Dice", color: "#b3261e" },
  ];
  let svg = `<svg viewBox="0 0 ${width} ${height}" xmlns="http://www.w3.org/2000/svg">`;
  for (const t of [0, 0.25, 0.5, 0.75, 1]) {
    svg += `<line x1="${m.l}" x2="${width - m.r}" y1="${Y(t)}" y2="${Y(t)}" stroke="#d0d7de"/>`;
    svg += `<text x="${m.l - 6}" y="${Y(t) + 4}" font-size="11" text-anchor="end" fill="#404850">${t}</text>`;
  }
  svg += `<text x="${(width + m.l) / 2}" y="${height - 6}" font-size="12" text-anchor="middle" fill="#1b1f24">labelled cases</text>`;
  for (const x of [...new Set(xs)]) svg += `<text x="${X(x)}" y="${height - m.b + 14}" font-size="11" text-anchor="middle" fill="#404850">${x}</text>`;
  series.forEach((s, i) => {
    const ok = pts.filter((p) => p[s.key] != null);
    const d = ok.map((p, j) => `${j ? "L" : "M"}${X(p.labelled_cases).toFixed(1)},${Y(p[s.key]).toFixed(1)}`).join(" ");
    if (d) svg += `<path d="${d}" fill="none" stroke="${s.color}" stroke-width="2"/>`;
    for (const p of ok) {
      svg += `<circle cx="${X(p.labelled_cases)}" cy="${Y(p[s.key])}" r="4" fill="${s.color}"><title>v${esc(p.number)}: ${esc(s.name)} ${p[s.key].toFixed(3)}</title></circle>`;
    }
    svg += `<rect x="${m.l + 8 + i * 130}" y="${m.t}" width="10" height="10" fill="${s.color}"/><text x="${m.l + 22 + i * 130}" y="${m.t + 9}" font-size="12" fill="#1b1f24">${s.name}</text>`;
  });
  return `${svg}</svg>`;
}

/** Training loss and validation Dice per epoch of one run (loss scaled by its largest value, said in the
 * legend, so both share the 0..1 axis). */
export function lossCurveSvg(epochs, { width = 520, height = 220 } = {}) {
  if (!epochs || !epochs.length) return '<p class="muted">No epochs yet.</p>';
  const m = { l: 44, r: 12, t: 22, b: 32 };
  const n = epochs.length;
  const X = (i) => m.l + (n > 1 ? i / (n - 1) : 0.5) * (width - m.l - m.r);
  const Y = (v) => height - m.b - Math.max(0, Math.min(1, v)) * (height - m.t - m.b);
  const maxLoss = Math.max(...epochs.map((e) => e.train_loss ?? 0), 1e-9);
  const series = [
    { name: `training loss (÷ ${maxLoss.toPrecision(3)})`, color: "#8250df", v: (e) => (e.train_loss == null ? null : e.train_loss / maxLoss) },
    { name: "validation Dice", color: "#0b5cad", v: (e) => e.val_dice },
  ];
  let svg = `<svg viewBox="0 0 ${width} ${height}" xmlns="http://www.w3.org/2000/svg">`;
  for (const t of [0, 0.5, 1]) {
    svg += `<line x1="${m.l}" x2="${width - m.r}" y1="${Y(t)}" y2="${Y(t)}" stroke="#d0d7de"/>`;
    svg += `<text x="${m.l - 6}" y="${Y(t) + 4}" font-size="11" text-anchor="end" fill="#404850">${t}</text>`;
  }
  svg += `<text x="${(width + m.l) / 2}" y="${height - 6}" font-size="12" text-anchor="middle" fill="#1b1f24">epoch (1..${n})</text>`;
  series.forEach((s, k) => {
    const d = epochs.map((e, i) => [i, s.v(e)]).filter(([, v]) => v != null)
      .map(([i, v], j) => `${j ? "L" : "M"}${X(i).toFixed(1)},${Y(v).toFixed(1)}`).join(" ");
    if (d) svg += `<path class="series-${k}" d="${d}" fill="none" stroke="${s.color}" stroke-width="2"/>`;
    svg += `<rect x="${m.l + 8 + k * 200}" y="4" width="10" height="10" fill="${s.color}"/><text x="${m.l + 22 + k * 200}" y="13" font-size="12" fill="#1b1f24">${esc(s.name)}</text>`;
  });
  return `${svg}</svg>`;
}
