// "Explain with ...": ask the server for an explanation the pipeline has not made for this case yet.
// Interactive methods (one forward and at most one backward pass) come back at once; expensive ones are
// queued on the server's explain queue and appear here when a worker has made them (polled).

import { get, post } from "./api.js";

const POLL_MS = 3000;
const POLL_TRIES = 200; // ten minutes

function option(m) {
  const o = document.createElement("option");
  o.value = m.method;
  o.textContent = m.interactive ? `${m.method} · on demand` : `${m.method} · ~${Math.round(m.nominal_cost)}× forward, queued`;
  return o;
}

/**
 * box: the container; payload: the editor payload (explain_catalogue, explain_url, case.id);
 * onMap(explanation): adds the map as a layer and shows it. Returns a cancel() that stops polling.
 */
export function buildExplainRequest(box, payload, onMap) {
  box.replaceChildren();
  const missing = (payload.explain_catalogue || []).filter((m) => !m.available);
  if (!payload.model_version || !missing.length) return () => {};
  const select = document.createElement("select");
  select.id = "explain-method";
  select.setAttribute("aria-label", "Explanation method to compute");
  missing.forEach((m) => select.append(option(m)));
  const button = document.createElement("button");
  button.type = "button"; button.id = "btn-explain"; button.className = "secondary"; button.textContent = "Explain";
  const status = document.createElement("p");
  status.id = "explain-status"; status.className = "muted small"; status.setAttribute("aria-live", "polite");
  box.append(select, button, status);
  let timer = null;
  let cancelled = false;

  const drop = (method) => {
    select.querySelector(`option[value="${method}"]`)?.remove();
    if (!select.options.length) { select.disabled = true; button.disabled = true; }
  };

  const poll = (method, tries) => {
    if (cancelled) return;
    timer = setTimeout(async () => {
      try {
        const fresh = await get(`/api/v1/cases/${payload.case.id}/editor`);
        const active = fresh.model_version && fresh.model_version.id;
        const done = fresh.explanations.find((e) => e.method === method && e.model_version_id === active);
        if (done) { status.textContent = `${method} is ready.`; onMap(done); return; }
      } catch (e) { status.textContent = e.message; return; }
      if (tries > 1) poll(method, tries - 1);
      else status.textContent = `${method} is still queued; reopen the case later.`;
    }, POLL_MS);
  };

  button.onclick = async () => {
    const method = select.value;
    button.disabled = true;
    status.textContent = `Asking for ${method}…`;
    try {
      const r = await post(payload.explain_url, { method });
      drop(method);
      if (r.explanation) {
        status.textContent = r.status === "computed" ? `${method} computed now.` : `${method} was ready.`;
        onMap({ ...r.explanation, map_url: `/api/v1/explanations/${r.explanation.id}/map.png` });
      } else {
        status.textContent = `${method} is queued (a worker makes it in the background); it appears here when ready.`;
        poll(method, POLL_TRIES);
      }
    } catch (e) {
      status.textContent = `${e.message}${e.code ? ` (${e.code})` : ""}`;
    } finally {
      button.disabled = !select.options.length;
    }
  };
  return () => { cancelled = true; clearTimeout(timer); };
}
