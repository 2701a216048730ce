"""Image post-processing done by a worker after import: intensity statistics and window presets."""

import logging

import numpy as np
from django.db import transaction

from annotations.models import Image, ImageStatus, Modality
from hitl.core.storage import array_load

log = logging.getLogger(__name__)

CT_PRESETS = [
    {"name": "soft tissue", "center": 40.0, "width": 400.0},
    {"name": "lung", "center": -600.0, "width": 1500.0},
    {"name": "bone", "center": 400.0, "width": 1800.0},
    {"name": "brain", "center": 40.0, "width": 80.0},
]


def intensity_stats(pixels: np.ndarray) -> dict:
    """Robust statistics of a (S, H, W[, 3]) array, subsampled for speed on big volumes."""
    flat = pixels.reshape(-1)
    step = max(1, flat.size // 2_000_000)
    sample = flat[::step].astype(np.float64)
    p = np.percentile(sample, [0.5, 1, 50, 99, 99.5])
    return {
        "min": float(sample.min()),
        "max": float(sample.max()),
        "mean": float(sample.mean()),
        "p0_5": float(p[0]),
        "p1": float(p[1]),
        "median": float(p[2]),
        "p99": float(p[3]),
        "p99_5": float(p[4]),
    }


def window_presets_for(modality: str, stats: dict, existing: list[dict]) -> list[dict]:
    """Presets from the file (DICOM) first, then the modality's standard ones, then an automatic one."""
    presets = list(existing)
    names = {p["name"] for p in presets}
    if modality == Modality.CT:
        presets += [p for p in CT_PRESETS if p["name"] not in names]
    lo, hi = stats["p0_5"], stats["p99_5"]
    if "auto" not in names and hi > lo:
        presets.append({"name": "auto", "center": (lo + hi) / 2, "width": hi - lo})
    return presets


def image_analyse(*, image_id: int) -> Image | None:
    """Idempotent: an image already READY is left alone."""
    image = Image.objects.filter(pk=image_id).first()
    if image is None or image.status == ImageStatus.READY:
        return image
    try:
        pixels = array_load(image.pixels_path)
        stats = intensity_stats(pixels)
    except Exception:
        log.exception("image %s: analysis failed", image_id)
        Image.objects.filter(pk=image_id).update(status=ImageStatus.FAILED)
        raise
    with transaction.atomic():
        image = Image.objects.select_for_update().get(pk=image_id)
        if image.status == ImageStatus.READY:
            return image
        image.stats = stats
        image.window_presets = window_presets_for(image.modality, stats, image.window_presets)
        image.status = ImageStatus.READY
        image.save(update_fields=["stats", "window_presets", "status"])
    return image
