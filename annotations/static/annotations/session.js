// One reading session on one case: claim, load, keep the lease alive, submit / skip / flag, and resolve
// a 409 without losing the reader's mask. No DOM here beyond what the callbacks are given.

import { ApiError, csrfToken, get, getPixels, getPngValues, post, rleEncode, setHeader } from "./api.js";

/** This tab's own id, kept across reloads of the tab (sessionStorage is per tab): a lease belongs to the
 * tab that claimed it, so a second tab on the same case opens read-only until it takes the case over. */
function tabId() {
  let id = sessionStorage.getItem("hitl-editor-tab");
  if (!id) {
    id = Array.from(crypto.getRandomValues(new Uint8Array(12)), (b) => b.toString(16).padStart(2, "0")).join("");
    sessionStorage.setItem("hitl-editor-tab", id);
  }
  return id;
}

// A lease that ended behind the page's back; the editor re-claims the same case (keeping the mask).
export const LEASE_LAPSED = new Set(["no_lease", "lease_expired", "lease_gone"]);

export class Session {
  /** hooks: {onLease(assignment|null, error?)} */
  constructor(projectId, hooks = {}) {
    this.projectId = projectId;
    this.hooks = hooks;
    this.timer = null;
    this.tab = tabId();
    setHeader("X-Editor-Tab", this.tab);
  }

  /** Claim the next case (or the one already held). Returns the assignment, or null for an empty queue;
   * `assignment.held_elsewhere` when another tab of this reader holds it. */
  async claim() {
    const assignment = await post(`/api/v1/projects/${this.projectId}/queue/claim`);
    this.assignment = assignment;
    return assignment;
  }

  /** Move the lease on the open case to this tab. */
  async takeOver() {
    this.assignment = await post(`/api/v1/cases/${this.caseId}/lease/take-over`);
    this.startHeartbeat();
    return this.assignment;
  }

  /** A new lease on the open case after ours lapsed (409 case_taken / already_read / ... otherwise). */
  async reclaim() {
    this.assignment = await post(`/api/v1/cases/${this.caseId}/lease/reclaim`);
    this.startHeartbeat();
    return this.assignment;
  }

  /** Everything the editor needs for `caseId`: payload, pixels, opening mask and proposal mask. The lease
   * is kept alive unless the case is opened read-only (held by another tab). */
  async load(caseId, { readOnly = false } = {}) {
    const payload = await get(`/api/v1/cases/${caseId}/editor`);
    const pixels = await getPixels(payload.case.pixels_url);
    const [h, w] = payload.case.shape;
    const proposalMask = payload.proposal ? await getPngValues(payload.proposal.mask_url, w, h) : null;
    let mask;
    if (payload.head_mask_url) mask = await getPngValues(payload.head_mask_url, w, h);
    else mask = proposalMask ? proposalMask.slice() : new Uint8Array(w * h);
    Object.assign(this, {
      caseId, payload, pixels, proposalMask, mask, width: w, height: h,
      baseRevision: payload.head_revision, openedAt: performance.now(),
    });
    if (readOnly) this.stopHeartbeat(); else this.startHeartbeat();
    return this;
  }

  /** The editor payload again (another model version became active): the new proposal replaces the old
   * one for "reset to proposal"; the reader's mask and base revision stay. */
  async reloadModelLayers() {
    const payload = await get(`/api/v1/cases/${this.caseId}/editor`);
    this.payload = payload;
    this.proposalMask = payload.proposal ? await getPngValues(payload.proposal.mask_url, this.width, this.height) : null;
    return payload;
  }

  /** The current head revision's mask (after a stale-base conflict). */
  async loadHead() {
    const payload = await get(`/api/v1/cases/${this.caseId}/editor`);
    if (!payload.head_mask_url) return { revision: payload.head_revision, mask: null };
    const values = await getPngValues(payload.head_mask_url, this.width, this.height);
    return { revision: payload.head_revision, mask: values };
  }

  get elapsed() {
    return this.openedAt ? (performance.now() - this.openedAt) / 1000 : 0;
  }

  /** Save `mask` as the next revision: through the lease, or (`revise`, a case this reader submitted
   * before, reopened from "my recent cases") as a revision of their own reading. */
  async submit(mask, { revise = false } = {}) {
    const body = {
      mask: rleEncode(mask, this.height, this.width),
      base_revision: this.baseRevision,
      time_spent_s: Math.min(86400, Math.round(this.elapsed * 10) / 10),
      proposal_model_version: this.payload.proposal ? this.payload.proposal.model_version_id : null,
    };
    const revision = await post(`/api/v1/cases/${this.caseId}/${revise ? "revisions" : "annotations"}`, body);
    this.stopHeartbeat();
    return revision;
  }

  async skip(reason) {
    const out = await post(`/api/v1/cases/${this.caseId}/skip`, { reason });
    this.stopHeartbeat();
    return out;
  }

  async flag(reason) {
    const out = await post(`/api/v1/cases/${this.caseId}/flag`, { reason });
    this.stopHeartbeat();
    return out;
  }

  /** Give the case back to the queue. keepalive: the request survives the page closing (like
   * navigator.sendBeacon, which cannot send the CSRF and tab headers). */
  release() {
    if (!this.caseId) return Promise.resolve();
    this.stopHeartbeat();
    return fetch(`/api/v1/cases/${this.caseId}/lease/release`, { method: "POST", keepalive: true,
      credentials: "same-origin", headers: { "X-CSRFToken": csrfToken(), "X-Editor-Tab": this.tab } });
  }

  startHeartbeat() {
    this.stopHeartbeat();
    const beat = async () => {
      try {
        const a = await post(`/api/v1/cases/${this.caseId}/lease/heartbeat`);
        this.assignment = a;
        this.hooks.onLease?.(a);
      } catch (err) {
        this.hooks.onLease?.(null, err);
      }
    };
    beat();
    // Renew well before expiry: a third of the lease, at most once a minute, at least every 5 s.
    const expires = this.assignment ? Date.parse(this.assignment.expires_at) - Date.now() : 60000;
    const every = Math.max(5000, Math.min(60000, expires / 3));
    this.timer = setInterval(beat, every);
  }

  stopHeartbeat() {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }
}

export function describeError(err) {
  if (!(err instanceof ApiError)) return String(err.message || err);
  const hints = {
    stale_base: "Someone saved a newer revision of this case while you were editing.",
    lease_expired: "Your hold on this case expired.",
    no_lease: "You no longer hold this case.",
    lease_gone: "Your hold on this case ended.",
    lease_moved: "This case is open in another tab or window of yours.",
    case_taken: "Another reader now holds this case.",
    already_read: "You have already submitted, skipped or flagged this case.",
    case_closed: "This case has left the reading queue.",
    lease_elsewhere: "You hold another case in another tab or window.",
    mask_labels_invalid: "The mask contains a label this project does not have.",
  };
  return `${hints[err.code] || err.message} (${err.code})`;
}

export function median(values) {
  if (!values.length) return null;
  const s = [...values].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

export function formatSeconds(s) {
  if (s == null) return "—";
  const m = Math.floor(s / 60);
  return m ? `${m} min ${Math.round(s % 60)} s` : `${Math.round(s)} s`;
}
