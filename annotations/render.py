"""Greyscale rendering with a window (centre/width) for thumbnails and previews."""

import io

import numpy as np
from PIL import Image as PILImage


def apply_window(pixels: np.ndarray, center: float, width: float) -> np.ndarray:
    lo, hi = center - width / 2, center + width / 2
    scaled = (pixels.astype(np.float32) - lo) / max(hi - lo, 1e-6)
    return (np.clip(scaled, 0, 1) * 255).astype(np.uint8)


def auto_window(pixels: np.ndarray) -> tuple[float, float]:
    lo, hi = np.percentile(pixels, [0.5, 99.5])
    return float((lo + hi) / 2), float(max(hi - lo, 1e-6))


def slice_png(pixels: np.ndarray, *, window: tuple[float, float] | None = None, max_size: int = 256) -> bytes:
    """(H, W) or (H, W, 3) -> PNG no larger than max_size on its longest side."""
    if pixels.ndim == 3:
        img = PILImage.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="RGB")
    else:
        center, width = window or auto_window(pixels)
        img = PILImage.fromarray(apply_window(pixels, center, width), mode="L")
    img.thumbnail((max_size, max_size))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
