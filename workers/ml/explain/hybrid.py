"""Hybrid maps: Grad-CAM fused with an attribution (KernelSHAP) or a perturbation (occlusion) map, as the
review recommends for high-stakes use: a region must be both class-discriminative in the decoder's
features (Grad-CAM) and matter to the score when perturbed or attributed.

Both parts are normalised to [0, 1] first (`normalise_map`), then fused per pixel:
"geometric_mean" sqrt(a * b) (default: keeps the scale of the parts) or "product" a * b (sharper).
Cost = the sum of both parts' costs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from workers.ml.explain import methods as _m
from workers.ml.explain.core import Context
from workers.ml.explain.maps import normalise_map
from workers.ml.explain.methods import MethodResult
from workers.ml.explain.shap import kernel_shap

FUSIONS = ("geometric_mean", "product")


def fuse(a: np.ndarray, b: np.ndarray, fusion: str, upper_percentile: float = 99.5) -> np.ndarray:
    """Fuse two raw maps of the same shape after normalising each to [0, 1]."""
    if fusion not in FUSIONS:
        raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
    na = normalise_map(a, upper_percentile=upper_percentile).astype(np.float64)
    nb = normalise_map(b, upper_percentile=upper_percentile).astype(np.float64)
    prod = na * nb
    return np.sqrt(prod) if fusion == "geometric_mean" else prod


def _hybrid(
    ctx: Context,
    other: Callable[..., MethodResult],
    other_params: dict[str, Any] | None,
    layer: str | None,
    fusion: str,
) -> tuple[np.ndarray, dict[str, Any], dict[str, Any]]:
    cam, cam_used = _m.gradcam(ctx, layer=layer)
    raw, used = other(ctx, **(other_params or {}))
    return fuse(cam, raw, fusion), cam_used, used


def gradcam_shap(
    ctx: Context,
    *,
    fusion: str = "geometric_mean",
    layer: str | None = None,
    shap_params: dict[str, Any] | None = None,
) -> MethodResult:
    """Grad-CAM x KernelSHAP on superpixels; `shap_params` go to `explain_shap.kernel_shap`."""
    fused, cam_used, shap_used = _hybrid(ctx, kernel_shap, shap_params, layer, fusion)
    return fused, {"fusion": fusion, "gradcam": cam_used, "kernel_shap": shap_used}


def gradcam_occlusion(
    ctx: Context,
    *,
    fusion: str = "geometric_mean",
    layer: str | None = None,
    occlusion_params: dict[str, Any] | None = None,
) -> MethodResult:
    """Grad-CAM x occlusion sensitivity; `occlusion_params` go to `explain_methods.occlusion`."""
    fused, cam_used, occ_used = _hybrid(ctx, _m.occlusion, occlusion_params, layer, fusion)
    return fused, {"fusion": fusion, "gradcam": cam_used, "occlusion": occ_used}
