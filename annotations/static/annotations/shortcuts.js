// Keyboard shortcuts with a generated help table. Keys are ignored while typing in a form field or
// while a dialog is open, so a reason typed into "Skip" never triggers a tool.

export class Shortcuts {
  constructor() {
    this.bindings = [];
    document.addEventListener("keydown", (ev) => this._onKey(ev));
  }

  /** keys: e.g. "b", "Ctrl+z", "Ctrl+Shift+z", "?", "[" ; help: text shown in the overlay. */
  add(keys, help, fn) {
    this.bindings.push({ keys: Array.isArray(keys) ? keys : [keys], help, fn });
    return this;
  }

  static describe(ev) {
    const parts = [];
    if (ev.ctrlKey || ev.metaKey) parts.push("Ctrl");
    if (ev.altKey) parts.push("Alt");
    const key = ev.key.length === 1 ? ev.key.toLowerCase() : ev.key;
    if (ev.shiftKey && ev.key.length !== 1) parts.push("Shift");
    if (ev.shiftKey && ev.key.length === 1 && /[a-z]/.test(key)) parts.push("Shift");
    parts.push(key);
    return parts.join("+");
  }

  _onKey(ev) {
    const t = ev.target;
    if (t && (t.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(t.tagName)) && t.type !== "range" && t.type !== "checkbox") return;
    if (document.querySelector("dialog[open]")) return;  // dialogs own the keyboard (Escape closes them)
    if (t && ["BUTTON", "A", "SUMMARY"].includes(t.tagName) && (ev.key === "Enter" || ev.key === " ")) return;
    const name = Shortcuts.describe(ev);
    for (const b of this.bindings) {
      if (b.keys.some((k) => k.toLowerCase() === name.toLowerCase())) {
        ev.preventDefault();
        b.fn(ev);
        return;
      }
    }
  }

  renderHelp(tbody) {
    tbody.replaceChildren();
    for (const b of this.bindings) {
      const tr = document.createElement("tr");
      const k = document.createElement("td");
      k.innerHTML = b.keys.map((x) => `<kbd>${x.replace(/</g, "&lt;")}</kbd>`).join(" / ");
      const d = document.createElement("td");
      d.textContent = b.help;
      tr.append(k, d);
      tbody.append(tr);
    }
  }
}
