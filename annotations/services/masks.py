"""Decode submitted masks (PNG or run-length) and measure correction effort. Pure numpy helpers."""

import base64
import binascii
import io

import numpy as np
from PIL import Image as PILImage

from hitl.core.errors import DomainError
from hitl.core.rle import expand_runs, runs
from hitl.core.storage import mask_from_png


class MaskError(DomainError):
    """A submitted mask that cannot be used (HTTP 400, listed under the `mask` field)."""

    status = 400
    field = "mask"

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message)


def mask_decode(payload: dict, *, shape: tuple[int, int], max_bytes: int = 20 * 1024 * 1024) -> np.ndarray:
    """{"format": "png_base64", "data": ...} or {"format": "rle", "size": [H, W], "values": [...],
    "lengths": [...]} (row-major runs of label values) -> (H, W) uint8. Checks the shape."""
    fmt = payload.get("format")
    if fmt == "png_base64":
        data = payload.get("data", "")
        if not isinstance(data, str) or len(data) > max_bytes * 4 // 3 + 4:
            raise MaskError("invalid_mask", "mask data missing or too large")
        mask = _png_decode(data, shape)
    elif fmt == "rle":
        mask = _rle_decode(payload, shape)
    else:
        raise MaskError("invalid_mask", 'mask format must be "png_base64" or "rle"')
    if mask.shape != tuple(shape):
        raise _shape_mismatch(mask.shape, shape)
    return mask


def _shape_mismatch(got: tuple[int, ...], shape: tuple[int, int]) -> MaskError:
    return MaskError("mask_shape_mismatch", f"mask shape {list(got)} does not match the image {list(shape)}")


def _png_decode(data: str, shape: tuple[int, int]) -> np.ndarray:
    """The size comes from the PNG header and is checked before any pixel is decoded (no PNG bombs)."""
    try:
        raw = base64.b64decode(data, validate=True)
        with PILImage.open(io.BytesIO(raw)) as im:  # reads the header only
            width, height = im.size
    except (binascii.Error, ValueError, OSError) as exc:
        raise MaskError("invalid_mask", "the mask is not a valid single-channel PNG") from exc
    if (height, width) != tuple(shape):
        raise _shape_mismatch((height, width), shape)
    try:
        return mask_from_png(raw)
    except (ValueError, OSError) as exc:
        raise MaskError("invalid_mask", "the mask is not a valid single-channel PNG") from exc


def _rle_decode(payload: dict, shape: tuple[int, int]) -> np.ndarray:
    try:
        h, w = (int(v) for v in payload["size"])
        values = np.asarray(payload["values"], dtype=np.int64)
        lengths = np.asarray(payload["lengths"], dtype=np.int64)
    except (KeyError, TypeError, ValueError, OverflowError) as exc:  # OverflowError: a run past int64
        raise MaskError("invalid_mask", "RLE needs size [H, W], values and lengths") from exc
    if (h, w) != tuple(shape):  # before expanding the runs: a forged size could ask for gigabytes
        raise _shape_mismatch((h, w), shape)
    if values.shape != lengths.shape or values.ndim != 1 or (lengths < 0).any() or h <= 0 or w <= 0:
        raise MaskError(
            "invalid_mask", "RLE values and lengths must be equal-length lists of non-negative runs"
        )
    if lengths.size and int(lengths.max()) > h * w:  # before summing: huge runs could wrap the int64 sum
        raise MaskError("invalid_mask", f"an RLE run is longer than the image's {h * w} pixels")
    if int(lengths.sum()) != h * w:
        raise MaskError("invalid_mask", f"RLE runs cover {int(lengths.sum())} pixels, not {h * w}")
    if values.size and (values.min() < 0 or values.max() > 255):
        raise MaskError("mask_labels_invalid", "label values must be 0..255")
    return expand_runs(values.astype(np.uint8), lengths).reshape(h, w)


def rle_encode(mask: np.ndarray) -> dict:
    """A label map -> the API's RLE payload (the format `mask_decode` reads): row-major runs."""
    flat = mask.reshape(-1)
    starts, lengths = runs(flat)
    return {
        "format": "rle",
        "size": list(mask.shape),
        "values": flat[starts].tolist(),
        "lengths": lengths.tolist(),
    }


def check_labels(mask: np.ndarray, allowed: set[int]) -> None:
    present = set(np.unique(mask).tolist()) - {0}
    unknown = present - allowed
    if unknown:
        raise MaskError(
            "mask_labels_invalid", f"label values {sorted(unknown)} are not classes of this project"
        )


def correction_effort(proposal: np.ndarray, submitted: np.ndarray) -> tuple[float, int]:
    """(mean Dice over the labels present in either mask, pixels whose label changed). Both empty -> 1.0."""
    labels = (set(np.unique(proposal).tolist()) | set(np.unique(submitted).tolist())) - {0}
    if not labels:
        return 1.0, 0
    dices = []
    for label in sorted(labels):
        a, b = proposal == label, submitted == label
        denom = int(a.sum()) + int(b.sum())
        dices.append(2.0 * int((a & b).sum()) / denom if denom else 1.0)
    return float(np.mean(dices)), int((proposal != submitted).sum())
