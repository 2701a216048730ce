// "My recent cases", mixed into the Editor class (editor.js): the cases this reader submitted, each reopened
// to submit a new revision of their own reading (no lease: POST /cases/{id}/revisions).

import { get } from "./api.js";
import { button } from "./editor_lease.js";
import { describeError } from "./session.js";

const $ = (id) => document.getElementById(id);

function item(text, cls = "muted") {
  const li = document.createElement("li");
  li.className = cls;
  li.textContent = text;
  return li;
}

export const recentMethods = {
  async refreshRecent() {
    const list = $("recent");
    try {
      const rows = await get(`/api/v1/projects/${this.session.projectId}/my-cases?limit=10`);
      list.replaceChildren(...(rows.length ? [] : [item("none yet")]));
      for (const r of rows) {
        const li = item("", "");
        const b = button(`recent-${r.case}`, `${r.image_name} · slice ${r.slice_index} · revision ${r.my_latest_revision ?? "?"}`,
          () => this.reopen(r.case), "link");
        b.dataset.case = String(r.case);
        b.disabled = r.flagged;
        b.title = r.flagged ? "flagged since: no longer revisable" : "reopen and submit a new revision";
        li.append(b);
        list.append(li);
      }
    } catch (err) {  // the list is a convenience: the editor works without it, and says so
      list.replaceChildren(item(`could not load: ${describeError(err)}`));
    }
  },

  async reopen(caseId) {
    if (this.state === "saving" || this.state === "loading") return;
    if (this.history?.dirty && this.state === "ready" && !window.confirm("Leave this case without saving your changes?")) return;
    if (this.state === "ready" && this.mode !== "revise") await this.session.release();  // back to the queue
    this.setState("loading");
    this.notice(null);
    try {
      await this.open(caseId, { revise: true });
      $("lease").textContent = "your reading"; $("lease").className = "badge";
      this.notice("Reopened a case you submitted: Submit saves a new revision, then the queue continues.", "info");
    } catch (err) {
      this.setState("error");
      const box = this.notice(`Could not reopen case ${caseId}: ${describeError(err)}`, "error");
      box.append(" ", button("btn-try-again", "Back to the queue", () => this.next(), "primary"));
    }
  },
};
