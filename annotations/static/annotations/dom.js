// Small DOM helpers the workspace pages share.

export const $ = (id) => document.getElementById(id);

/** A number with `digits` decimals, or an em dash when there is none. */
export const fmt = (v, digits = 3) => (v == null ? "—" : Number(v).toFixed(digits));

/** Append a text cell to a table row; returns the cell. */
export function cell(tr, text) { const td = document.createElement("td"); td.textContent = text; tr.append(td); return td; }

/** Show `text` in the page's #notice box (kind "error" or "info"); no text hides it. */
export function notice(text, kind = "error") {
  const box = $("notice");
  box.hidden = !text; box.className = `notice ${kind}`; box.textContent = text || "";
}
