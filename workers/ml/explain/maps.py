"""Heatmap post-processing and PNG encoding for explanations (pure numpy + matplotlib + Pillow).

Every explanation map leaves this module as float32 (H, W) in [0, 1] with no NaN/inf.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

# A map whose (robust) range is below this, relative to its magnitude, carries no information.
_RELATIVE_EPS = 1e-6


def normalise_map(raw: np.ndarray, *, upper_percentile: float = 99.5) -> np.ndarray:
    """Scale a raw attribution map to float32 [0, 1].

    The minimum maps to 0 and the `upper_percentile` to 1 (values above are clipped), so a few extreme
    pixels (common in gradient maps) do not flatten the rest. Non-finite values count as 0. A constant
    map (or an all-zero one) has no spatial information and becomes all zeros, never NaN.
    """
    m = np.asarray(raw, dtype=np.float64)
    if m.ndim != 2:
        raise ValueError(f"expected a 2-D map, got shape {m.shape}")
    m = np.where(np.isfinite(m), m, 0.0)
    lo = float(m.min())
    hi = float(np.percentile(m, upper_percentile))
    scale = max(abs(lo), abs(float(m.max())), 1e-30)
    if hi - lo <= _RELATIVE_EPS * scale:
        # Mass concentrated in under 0.5% of pixels: fall back to the true maximum.
        hi = float(m.max())
    if hi - lo <= _RELATIVE_EPS * scale:
        return np.zeros(m.shape, dtype=np.float32)
    return np.clip((m - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def _check_map(heatmap: np.ndarray) -> np.ndarray:
    m = np.asarray(heatmap, dtype=np.float64)
    if m.ndim != 2:
        raise ValueError(f"expected a 2-D map, got shape {m.shape}")
    return np.clip(np.where(np.isfinite(m), m, 0.0), 0.0, 1.0)


def map_to_png(heatmap: np.ndarray) -> bytes:
    """8-bit grey PNG of a [0, 1] map (values outside are clipped), for storage."""
    m = _check_map(heatmap)
    img = Image.fromarray(np.rint(m * 255.0).astype(np.uint8))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def map_from_png(data: bytes) -> np.ndarray:
    """Inverse of `map_to_png`: float32 (H, W) in [0, 1], within 1/510 of the stored map."""
    with Image.open(io.BytesIO(data)) as img:
        return (np.asarray(img.convert("L"), dtype=np.float32) / 255.0).astype(np.float32)


def _grey(image: np.ndarray) -> np.ndarray:
    """Image -> (H, W) float in [0, 1] with a 1-99 percentile window.

    Accepts (H, W), channels-first (C, H, W) with C <= 9 as produced by `prepare_image` or
    `prepare_context` (2.5D: up to 3 RGB slices; the mean over channels is shown), or channels-last (H, W, 3).
    """
    a = np.asarray(image, dtype=np.float64)
    if a.ndim == 3 and a.shape[0] <= 9:
        a = a.mean(axis=0)
    elif a.ndim == 3 and a.shape[-1] == 3:
        a = a.mean(axis=-1)
    elif a.ndim != 2:
        raise ValueError(f"expected (H, W), (C, H, W) or (H, W, 3) image, got shape {a.shape}")
    a = np.where(np.isfinite(a), a, 0.0)
    lo, hi = np.percentile(a, [1.0, 99.0])
    if hi - lo <= 1e-12:
        return np.zeros(a.shape, dtype=np.float64)
    return np.clip((a - lo) / (hi - lo), 0.0, 1.0)


def overlay_png(
    image: np.ndarray, heatmap: np.ndarray, *, alpha: float = 0.5, colormap: str = "jet"
) -> bytes:
    """RGB PNG of `image` in grey with `heatmap` blended on top.

    The blend weight of a pixel is `alpha * heatmap`: where the map is 0 the anatomy shows unchanged
    (the reader must still see the image), where it is 1 the colour covers `alpha` of it.
    `colormap` is any matplotlib colormap name ("jet", "inferno", ...).
    """
    import matplotlib

    if not 0.0 <= alpha <= 1.0:
        raise ValueError("alpha must be in [0, 1]")
    grey = _grey(image)
    m = _check_map(heatmap)
    if m.shape != grey.shape:
        raise ValueError(f"map shape {m.shape} does not match image shape {grey.shape}")
    colours = matplotlib.colormaps[colormap](m)[..., :3]
    weight = (alpha * m)[..., None]
    rgb = (1.0 - weight) * grey[..., None] + weight * colours
    img = Image.fromarray(np.rint(rgb * 255.0).astype(np.uint8))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
