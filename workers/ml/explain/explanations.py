"""Explanations of a segmentation model's prediction for one image, as heatmaps the editor can show.

    explain(model, image, "gradcam", target_class=1) -> Explanation(map (H, W) float32 in [0, 1], ...)

Methods, cheapest first (cost measured per call in forward-pass units, see `Explanation`):
- "uncertainty": normalised predictive entropy of the softmax (~1 forward)
- "saliency": |d score / d input| (~1 forward + backward)
- "gradcam": Seg-Grad-CAM on a decoder layer (MONAI GradCAM, ~1 forward + backward)
- "occlusion": drop of the score when patches are occluded (MONAI OcclusionSensitivity, ~25 forwards
  at 96x96 with the defaults)
- "smoothgrad": saliency averaged over noisy copies (`samples` forward + backward)
- "integrated_gradients": path integral of gradients (`steps + 1` forward + backward)
- "lime": ridge surrogate over SLIC superpixels (`samples + 1` forwards; `explain_lime`)
- "kernel_shap": Shapley values of superpixels (`samples + 2` forwards), "gradient_shap": expected
  gradients (`samples` forward + backward); both report `completeness_error` (`explain_shap`)
- "gradcam_shap", "gradcam_occlusion": Grad-CAM fused with KernelSHAP / occlusion (`explain_hybrid`)
- "attention": attention-gate coefficients, only for `arch="attention_unet"` models (1 forward; listed
  in MODEL_SPECIFIC_METHODS, not METHODS, since other models raise ValueError; `explain_attention`)

"score" is the sum or mean (`reduction`) of the target class's logits over a region fixed from the
clean image: the predicted region of the target class (default), the whole image (`region="image"`, also
the fallback when the predicted region is empty), or a boolean (H, W) mask. See `explain_core`.

Works on CPU and CUDA: tensors go to the model's device. The model's train/eval modes, parameters'
requires_grad and .grad, and hooks are as they were afterwards.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from workers.ml.explain import methods as _m
from workers.ml.explain.attention import attention
from workers.ml.explain.core import (
    Context,
    RegionScore,
    forward_seconds,
    frozen_model,
    graph_forward,
    model_device,
    model_divisor,
    pad_to_multiple,
    region_weights,
    synchronize,
    time_forward,
)
from workers.ml.explain.hybrid import gradcam_occlusion, gradcam_shap
from workers.ml.explain.lime import lime
from workers.ml.explain.maps import map_from_png, map_to_png, normalise_map, overlay_png
from workers.ml.explain.policy import (
    ARCH_METHODS,
    INTERACTIVE_MAX_COST,
    METHODS,
    MODEL_SPECIFIC_METHODS,
    NOMINAL_COST,
    is_interactive,
    methods_for_arch,
)
from workers.ml.explain.shap import gradient_shap, kernel_shap

__all__ = [
    "ARCH_METHODS",
    "INTERACTIVE_MAX_COST",
    "METHODS",
    "MODEL_SPECIFIC_METHODS",
    "NOMINAL_COST",
    "Explanation",
    "explain",
    "is_interactive",
    "map_from_png",
    "methods_for_arch",
    "map_to_png",
    "normalise_map",
    "overlay_png",
]


_IMPLEMENTATIONS: dict[str, Callable[..., _m.MethodResult]] = {
    "gradcam": _m.gradcam,
    "saliency": _m.saliency,
    "smoothgrad": _m.smoothgrad,
    "integrated_gradients": _m.integrated_gradients,
    "occlusion": _m.occlusion,
    "uncertainty": _m.uncertainty,
    "lime": lime,
    "kernel_shap": kernel_shap,
    "gradient_shap": gradient_shap,
    "gradcam_shap": gradcam_shap,
    "gradcam_occlusion": gradcam_occlusion,
    "attention": attention,
}

# Gradient methods that reuse the clean forward pass (its autograd graph) instead of running another.
GRAPH_METHODS = frozenset({"saliency"})

# Maps with an absolute scale that per-image rescaling would destroy.
_ABSOLUTE_SCALE = frozenset({"uncertainty"})


@dataclass(frozen=True, eq=False)
class Explanation:
    """One heatmap and how it was made.

    map: float32 (H, W) in [0, 1], no NaN, at the image's size (a constant raw map becomes zeros).
    params: every parameter used (defaults included) plus method diagnostics, JSON-serialisable; e.g.
        integrated gradients reports `completeness_error` = |sum(attr) - (F(x) - F(b))| / |F(x) - F(b)|.
    seconds: wall time of the method (post-processing included).
    cost_forward_units: seconds / seconds of one warm forward pass of the same model on the same image,
        measured in the same call: a device-independent cost for scheduling (interactive vs background).
    """

    map: np.ndarray
    method: str
    params: dict[str, Any] = field(default_factory=dict)
    cost_forward_units: float = 0.0
    seconds: float = 0.0


def _as_input(image: np.ndarray, device: torch.device, divisor: int) -> tuple[torch.Tensor, int, int]:
    arr = np.asarray(image)
    if arr.ndim != 3:
        raise ValueError(f"expected a prepared (C, H, W) image, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("image contains NaN or inf")
    x = torch.as_tensor(arr.astype(np.float32, copy=False), device=device)[None]
    return pad_to_multiple(x, divisor), int(arr.shape[1]), int(arr.shape[2])


def explain(
    model: nn.Module,
    image: np.ndarray,
    method: str,
    *,
    target_class: int,
    region: str | np.ndarray | None = None,
    reduction: str = "mean",
    upper_percentile: float = 99.5,
    **params: Any,
) -> Explanation:
    """Explain `model`'s segmentation of `image` for `target_class` with `method` (one of METHODS).

    Preconditions: `image` is a prepared float (C, H, W) array with C = the model's in_channels; the model
    maps (B, C, H, W) to logits (B, K, H, W) and 0 <= target_class < K. H and W need not be multiples of
    the network's divisor (MONAI UNet): the input is edge-padded and maps are cropped back.
    `params` are the method's own (see `explain_methods`); unknown ones raise TypeError.
    `upper_percentile` is where the normalisation clips (not applied to "uncertainty").
    """
    if method not in _IMPLEMENTATIONS:
        raise ValueError(
            f"unknown explanation method {method!r}; choose from {METHODS + MODEL_SPECIFIC_METHODS}"
        )
    device = model_device(model)
    with frozen_model(model):
        x, height, width = _as_input(image, device, model_divisor(model))
        x_leaf = graph_logits = None
        if method in GRAPH_METHODS:  # the method's own forward is the clean one: timed from here
            seconds_per_forward = forward_seconds(model, x)
            t0 = time.perf_counter()
            x_leaf, graph_logits = graph_forward(model, x)
            logits = graph_logits.detach()
        else:
            logits, seconds_per_forward = time_forward(model, x)
            t0 = time.perf_counter()
        if not 0 <= target_class < logits.shape[1]:
            raise ValueError(f"target_class {target_class} outside [0, {logits.shape[1]})")
        weights, region_used = region_weights(logits, target_class, region, reduction, height, width)
        score = RegionScore(model, target_class, weights)
        ctx = Context(
            model, x, height, width, target_class, logits, score, seconds_per_forward, x_leaf, graph_logits
        )
        raw, used = _IMPLEMENTATIONS[method](ctx, **params)
        synchronize(device)
        heatmap = _finish(raw, method, upper_percentile)
        seconds = time.perf_counter() - t0
    all_params = {
        "target_class": int(target_class),
        "reduction": reduction,
        "upper_percentile": upper_percentile if method not in _ABSOLUTE_SCALE else None,
        "image_shape": [int(s) for s in np.shape(image)],
        "device": str(device),
        **region_used,
        **used,
    }
    return Explanation(
        map=heatmap,
        method=method,
        params=all_params,
        cost_forward_units=seconds / seconds_per_forward,
        seconds=seconds,
    )


def _finish(raw: np.ndarray, method: str, upper_percentile: float) -> np.ndarray:
    if method in _ABSOLUTE_SCALE:
        return np.clip(np.nan_to_num(raw, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0).astype(np.float32)
    return normalise_map(raw, upper_percentile=upper_percentile)
