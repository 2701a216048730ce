// One reading session on one case: claim, load, keep the lease alive, submit / skip / flag, and resolve
// a 409 without losing the reader's mask. No DOM here beyond what the callbacks are given.

import { ApiError, get, getPixels, getPngValues, post, rleEncode } from "./api.js";

export class Session {
  /** hooks: {onLease(assignment|null, error?)} */
  constructor(projectId, hooks = {}) {
    this.projectId = projectId;
    this.hooks = hooks;
    this.timer = null;
  }

  /** Claim the next case (or the one already held). Returns the assignment, or null for an empty queue. */
  async claim() {
    const assignment = await post(`/api/v1/projects/${this.projectId}/queue/claim`);
    this.assignment = assignment;
    return assignment;
  }

  /** Everything the editor needs for `caseId`: payload, pixels, opening mask and proposal mask. */
  async load(caseId) {
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
    this.startHeartbeat();
    return this;
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

  async submit(mask) {
    const body = {
      mask: rleEncode(mask, this.height, this.width),
      base_revision: this.baseRevision,
      time_spent_s: Math.min(86400, Math.round(this.elapsed * 10) / 10),
      proposal_model_version: this.payload.proposal ? this.payload.proposal.model_version_id : null,
    };
    const revision = await post(`/api/v1/cases/${this.caseId}/annotations`, body);
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

  release() {
    if (!this.caseId) return;
    // keepalive: the request survives the page unloading
    fetch(`/api/v1/cases/${this.caseId}/lease/release`, { method: "POST", keepalive: true,
      credentials: "same-origin", headers: { "X-CSRFToken": (document.cookie.match(/csrftoken=([^;]+)/) || [])[1] || "" } });
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
