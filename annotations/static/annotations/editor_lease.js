// The editor's lease handling, mixed into the Editor class (editor.js): another tab holding the case
// (read-only + take over), a lapsed lease (re-claim the same case, keep the mask), a case lost to another
// reader (the mask stays on screen, downloadable), release. Methods use the editor's session, state and notice.

import { rleEncode } from "./api.js";
import { describeError, LEASE_LAPSED } from "./session.js";

const $ = (id) => document.getElementById(id);

export function button(id, text, onclick, cls = "secondary") {
  const b = document.createElement("button");
  b.type = "button"; b.id = id; b.className = cls; b.textContent = text; b.onclick = onclick;
  return b;
}

export const leaseMethods = {
  /** Another tab holds the lease: this one shows the case without editing until it takes the case over. */
  showReadOnly(why) {
    this.session.stopHeartbeat();
    this.setState("readonly");
    $("lease").textContent = "read-only"; $("lease").className = "badge stale";
    const box = this.notice(`${why} This tab is read-only; the mask on screen is kept.`, "info");
    box.append(" ", button("btn-take-over", "Take over here", () => this.takeOver(), "primary"));
  },

  async takeOver() {
    try {
      await this.session.takeOver();
      this.setState("ready");
      this.notice("This tab holds the case now; the other one turns read-only.", "info");
    } catch (err) {
      if (await this.recover(err)) this.notice("This tab holds the case now.", "info");
    }
  },

  /** After a lease error: re-claim the same case when the lease lapsed (the mask stays). True when this tab
   * holds the case again; otherwise the page says why (read-only, or lost with the mask downloadable). */
  async recover(err) {
    if (err.code === "lease_moved") { this.showReadOnly(describeError(err)); return false; }
    if (!LEASE_LAPSED.has(err.code)) return false;
    try {
      await this.session.reclaim();
      this.setState("ready");
      return true;
    } catch (again) {
      this.lost(again);
      return false;
    }
  },

  /** The case cannot be held again (another reader has it, it was read or flagged): nothing is sent, the
   * mask stays on screen and can be downloaded in the submission format. */
  lost(err) {
    this.session.stopHeartbeat();
    this.setState("lost");
    $("lease").textContent = "lease lost"; $("lease").className = "badge stale";
    const box = this.notice(`Not saved: ${describeError(err)} Your mask is still on screen.`, "error");
    box.append(" ", button("btn-download-mask", "Download my mask", () => this.downloadMask()),
      " ", button("btn-next-case", "Open the next case", () => this.next(), "primary"));
  },

  downloadMask() {
    const s = this.session;
    const body = { case: s.caseId, base_revision: s.baseRevision, mask: rleEncode(this.history.mask, s.height, s.width) };
    const a = document.createElement("a");
    a.href = URL.createObjectURL(new Blob([JSON.stringify(body)], { type: "application/json" }));
    a.download = `case-${s.caseId}-mask.json`;
    a.click();
    setTimeout(() => URL.revokeObjectURL(a.href), 1000);
  },

  async releaseCase() {
    if (this.state !== "ready") return;
    if (this.history?.dirty && !window.confirm("Release this case without saving your changes?")) return;
    await this.session.release();
    this.history = null;
    this.setState("released");
    $("lease").textContent = "released"; $("lease").className = "badge";
    const box = this.notice("Released: the case is back in the queue for every reader.", "info");
    box.append(" ", button("btn-next-case", "Claim a case", () => this.next(), "primary"));
  },

  async showLease(a, err) {
    const badge = $("lease");
    if (a) {
      const t = new Date(a.expires_at);
      badge.textContent = `held until ${t.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })}`;
      badge.className = "badge ok";
      if ("active_model_version" in a) await this.activeVersionIs(a.active_model_version);
    } else if (err.code === "lease_moved" || LEASE_LAPSED.has(err.code)) {
      if (await this.recover(err)) this.notice("Your hold on this case had lapsed; it is yours again and nothing was lost.", "info");
    } else {  // e.g. the network: the next heartbeat tries again
      badge.textContent = "not renewed";
      badge.className = "badge stale";
      this.notice(`Lease renewal failed: ${describeError(err)}. Your mask is still here; retrying.`, "error");
    }
  },
};
