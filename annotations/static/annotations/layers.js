// The layer panel: the editable mask, the uncertainty map and every explanation the server has, each with
// a toggle and an opacity slider; explanations show their method, model version, cost and a stale badge.

import { getPngValues } from "./api.js";

export const METHOD_NAMES = {
  gradcam: "Grad-CAM",
  saliency: "Saliency",
  smoothgrad: "SmoothGrad",
  integrated_gradients: "Integrated gradients",
  occlusion: "Occlusion",
  uncertainty: "Uncertainty (entropy)",
  lime: "LIME",
  kernel_shap: "KernelSHAP",
  gradient_shap: "GradientSHAP",
  gradcam_shap: "Grad-CAM × SHAP",
  gradcam_occlusion: "Grad-CAM × occlusion",
  attention: "Attention gates",
};

const clamp = (v) => Math.max(0, Math.min(255, Math.round(v)));

/** Heat colormap (black-red-yellow-white), transparent where the map is low. */
export function heat(v) {
  const t = v / 255;
  return [clamp(765 * t), clamp(765 * t - 255), clamp(765 * t - 510), clamp(40 + 215 * t) * (t > 0.02)];
}

/** Uncertainty: magenta, opacity grows with uncertainty; nothing below `threshold` (0..255), so confident
 * pixels (air, the middle of a clear structure) stay untinted. */
export const UNCERTAINTY_THRESHOLD = 0.2;
export function unsureAbove(threshold) {
  return (v) => [230, 60, 230, v < threshold ? 0 : clamp(v)];
}
export const unsure = unsureAbove(Math.round(UNCERTAINTY_THRESHOLD * 255));

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k in e && typeof v !== "string") e[k] = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) if (c != null) e.append(c);
  return e;
}

function row(list, { id, name, checked, opacity, badges, onToggle, onOpacity }) {
  const cb = el("input", { type: "checkbox", id: `layer-${id}`, checked });
  const slider = el("input", {
    type: "range", min: "0", max: "100", value: String(Math.round(opacity * 100)),
    id: `opacity-${id}`, "aria-label": `${name} opacity`,
  });
  cb.addEventListener("change", () => onToggle(cb.checked));
  slider.addEventListener("input", () => onOpacity(Number(slider.value) / 100));
  const li = el("li", { class: "layer", "data-layer": id },
    el("div", { class: "layer-head" }, cb, el("label", { for: `layer-${id}` }, name), ...badges), slider);
  list.append(li);
  return { checkbox: cb, slider };
}

const badge = (text, cls = "") => el("span", { class: `badge ${cls}` }, text);

/** A colour scale for a map: the colormap's ramp between its two ends' words. */
const legend = (kind, low, high) => el("span", { class: "legend-scale small", role: "img",
  "aria-label": `colour scale: ${low} to ${high}` }, `${low} `, el("span", { class: `legend ${kind}` }), ` ${high}`);

/** The uncertainty map's threshold: pixels less uncertain than it are not tinted. */
function thresholdControl(viewer, overlayOf) {
  const slider = el("input", {
    type: "range", min: "0", max: "90", value: String(Math.round(UNCERTAINTY_THRESHOLD * 100)),
    id: "uncertainty-threshold", "aria-label": "Uncertainty threshold (per cent of the maximum)",
  });
  const out = el("span", { class: "muted small" }, `${slider.value} %`);
  slider.addEventListener("input", () => {
    out.textContent = `${slider.value} %`;
    const overlay = overlayOf();
    if (overlay) viewer.recolorOverlay(overlay, unsureAbove(Math.round((Number(slider.value) / 100) * 255)));
  });
  return el("li", { class: "layer", "data-layer": "uncertainty-threshold" },
    el("label", { class: "small", for: "uncertainty-threshold" }, "Show uncertainty above ", out), slider);
}

/** Fill / outline for the mask, and one toggle per label (hiding a label only hides its colour). */
function maskOptions(viewer, labels) {
  const outline = el("input", { type: "checkbox", id: "mask-outline", checked: viewer.maskStyle === "outline" });
  outline.addEventListener("change", () => viewer.setMaskStyle({ style: outline.checked ? "outline" : "fill" }));
  const perLabel = labels.map((c) => {
    const cb = el("input", { type: "checkbox", id: `mask-label-${c.value}`, checked: !viewer.hiddenLabels.has(c.value) });
    cb.dataset.value = String(c.value);
    cb.addEventListener("change", () => {
      const hidden = new Set(viewer.hiddenLabels);
      if (cb.checked) hidden.delete(c.value); else hidden.add(c.value);
      viewer.setMaskStyle({ hidden });
    });
    return el("label", { class: "check small", for: `mask-label-${c.value}` }, cb,
      el("span", { class: "swatch", "data-value": String(c.value), style: `background:${c.color}` }), ` ${c.name}`);
  });
  return el("li", { class: "layer mask-options", "data-layer": "mask-options" },
    el("label", { class: "check small", for: "mask-outline" }, outline, " outline only"), ...perLabel);
}

/**
 * Build the panel for one case. viewer: Viewer; payload: the editor payload. Resolves once the maps
 * are loaded. Returns {toggle(id)} for the keyboard shortcuts.
 */
export async function buildLayers(list, viewer, payload) {
  list.replaceChildren();
  const { width, height } = viewer;
  const controls = {};
  const proposal = payload.proposal;
  const maskBadges = [];
  if (proposal) {
    maskBadges.push(badge(`proposal v${proposal.model_version}`));
    if (proposal.stale) maskBadges.push(badge("stale", "stale"));
  } else if (payload.head_revision == null) {
    maskBadges.push(badge("no proposal yet", "muted"));
  }
  if (payload.head_revision != null) maskBadges.push(badge(`revision ${payload.head_revision}`));
  controls.mask = row(list, {
    id: "mask", name: "Mask (editable)", checked: viewer.maskVisible, opacity: viewer.maskOpacity,
    badges: maskBadges,
    onToggle: (on) => { viewer.maskVisible = on; viewer.requestRender(); },
    onOpacity: (a) => { viewer.maskOpacity = a; viewer.requestRender(); },
  });
  list.append(maskOptions(viewer, payload.label_classes));
  const loads = [];
  const addMap = (id, name, url, colormap, badges) => {
    const overlay = { visible: false, opacity: 0.6 };
    controls[id] = row(list, {
      id, name, checked: false, opacity: overlay.opacity, badges,
      onToggle: (on) => { overlay.visible = on; if (overlay.real) overlay.real.visible = on; viewer.requestRender(); },
      onOpacity: (a) => { overlay.opacity = a; if (overlay.real) overlay.real.opacity = a; viewer.requestRender(); },
    });
    controls[id].overlay = overlay;
    loads.push(getPngValues(url, width, height).then((values) => {
      overlay.real = viewer.addOverlay(id, values, colormap, overlay);
    }).catch(() => {
      controls[id].checkbox.disabled = true;
      controls[id].checkbox.parentElement.append(badge("failed to load", "stale"));
    }));
  };
  if (payload.uncertainty_url) {
    const b = [badge(`v${proposal.model_version}`)];
    if (proposal.stale) b.push(badge("stale", "stale"));
    b.push(legend("unsure", "certain", "uncertain"));
    addMap("uncertainty", "Uncertainty", payload.uncertainty_url, unsure, b);
    list.append(thresholdControl(viewer, () => controls.uncertainty.overlay?.real));
  }
  // The "uncertainty" explanation of the proposal's own version is the same map: one layer, not two.
  const sameAsUncertainty = (e) => e.method === "uncertainty" && payload.uncertainty_url
    && proposal && e.model_version === proposal.model_version;
  const labelName = new Map(payload.label_classes.map((c) => [c.value, c.name]));
  const addExplanation = (e) => {
    if (sameAsUncertainty(e)) return;
    const b = [badge(`v${e.model_version}`)];
    const target = e.params?.target_class;
    if (target != null) b.push(badge(`explains ${labelName.get(target) ?? `class ${target}`}`, "target"));
    b.push(legend("heat", "low", "high"));
    if (e.stale) b.push(badge("stale", "stale"));
    if (e.cost_forward_units != null) {
      b.push(el("span", { class: "muted small", title: "measured cost in forward passes" }, `${Number(e.cost_forward_units).toFixed(1)}× forward`));
    }
    addMap(`${e.method}-v${e.model_version}`, METHOD_NAMES[e.method] || e.method, e.map_url, heat, b);
  };
  payload.explanations.forEach(addExplanation);
  const empty = payload.explanations.length ? null : el("li", { class: "muted small" }, "No explanations for this case yet.");
  if (empty) list.append(empty);
  await Promise.all(loads);
  return {
    controls,
    /** Add a map that arrived later (an on-demand explanation) and show it. */
    async addExplanation(e) {
      empty?.remove();
      addExplanation(e);
      await Promise.all(loads);
      const key = sameAsUncertainty(e) ? "uncertainty" : `${e.method}-v${e.model_version}`;
      if (!controls[key].checkbox.checked && !controls[key].checkbox.disabled) controls[key].checkbox.click();
    },
    /** Toggle a layer by id prefix ("mask", "uncertainty", "gradcam", ...): the first match. */
    toggle(prefix) {
      const key = Object.keys(controls).find((k) => k === prefix || k.startsWith(`${prefix}-`));
      if (!key || controls[key].checkbox.disabled) return false;
      controls[key].checkbox.click();
      return true;
    },
  };
}
