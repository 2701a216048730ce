"""PNG (Pillow) and TIFF (tifffile) decoding into (S, H, W) or (S, H, W, 3) arrays.

Sizes are checked from the header before any pixel is decoded. Alpha channels are dropped (we annotate
what is shown, not transparency); colour images whose three channels are identical become grayscale.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import tifffile
from PIL import Image

from workers.ml.imaging.errors import IngestError, Limits
from workers.ml.imaging.model import normalize_dtype

_TIFF_UNIT_MM = {3: 10.0}  # ResolutionUnit 3 = centimetre; inch (2) is mostly a screen-DPI placeholder


def read_png(data: bytes, limits: Limits, *, labels: bool = False) -> np.ndarray:
    """PNG -> (1, H, W) or (1, H, W, 3). labels=True keeps palette indices (a label map), never colour."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = Image.open(io.BytesIO(data))
            limits.check_slice(image.height, image.width)
            limits.check_pixels(image.width * image.height)
            arr = _pil_to_array(image, labels)
    except IngestError:
        raise
    except Image.DecompressionBombError:  # Pillow's own guard fires in open(), before ours
        raise IngestError("too_large", "the PNG image has too many pixels") from None
    except Exception:
        raise IngestError("not_an_image", "the PNG file could not be decoded") from None
    return _finish(arr[np.newaxis])


def _pil_to_array(image: Image.Image, labels: bool) -> np.ndarray:
    mode = image.mode
    if mode == "P" and not labels:
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode in ("LA", "PA") or mode == "P" and labels:
        image = image.getchannel(0) if mode != "P" else image
    elif mode not in ("1", "L", "I", "I;16", "I;16B", "I;16L", "F", "RGB", "RGBA"):
        image = image.convert("RGB")
    arr = np.asarray(image)
    return arr[..., :3] if arr.ndim == 3 else arr


def read_tiff(data: bytes, limits: Limits) -> tuple[np.ndarray, tuple[float, float]]:
    """TIFF (first series) -> (S, H, W) or (S, H, W, 3), and (row_mm, col_mm) when a cm unit is stored."""
    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            series = tif.series[0]
            _check_tiff_size(series.shape, series.axes, limits)
            arr = _tiff_layout(series.asarray(), series.axes)
            spacing = _tiff_spacing(series.keyframe)
    except IngestError:
        raise
    except Exception:
        raise IngestError(
            "not_an_image", "the TIFF file could not be decoded (layout or compression)"
        ) from None
    return _finish(arr), spacing


def _check_tiff_size(shape: tuple[int, ...], axes: str, limits: Limits) -> None:
    """From the tags alone, before any strip or tile is decoded."""
    sizes = dict(zip(axes, shape, strict=True))
    limits.check_slice(int(sizes.get("Y", 0)), int(sizes.get("X", 0)))
    limits.check_pixels(
        int(np.prod([n for n, a in zip(shape, axes, strict=True) if a != "S"], dtype=np.int64))
    )


def _tiff_layout(arr: np.ndarray, axes: str) -> np.ndarray:
    """Bring tifffile's axes to (S, H, W[, C]): samples last, one optional stack axis first."""
    keep = [i for i, n in enumerate(arr.shape) if n != 1 or axes[i] in "YX"]
    arr, axes = arr.reshape([arr.shape[i] for i in keep]), "".join(axes[i] for i in keep)
    if "S" in axes and axes.index("S") != len(axes) - 1:  # planar configuration: channels before Y
        arr, axes = np.moveaxis(arr, axes.index("S"), -1), axes.replace("S", "") + "S"
    core = axes[:-1] if axes.endswith("S") else axes
    if not core.endswith("YX") or len(core) > 3:
        raise IngestError("not_an_image", "this TIFF layout is not supported (expected 2D, a stack or RGB)")
    return arr if len(core) == 3 else arr[np.newaxis]


def _tiff_spacing(page: tifffile.TiffPage) -> tuple[float, float]:
    tags = page.tags
    unit = tags.get("ResolutionUnit")
    scale = _TIFF_UNIT_MM.get(int(unit.value)) if unit is not None else None
    x, y = tags.get("XResolution"), tags.get("YResolution")
    if scale is None or x is None or y is None:
        return 1.0, 1.0
    (xn, xd), (yn, yd) = x.value, y.value
    if not (xn > 0 and xd > 0 and yn > 0 and yd > 0):
        return 1.0, 1.0
    return scale * yd / yn, scale * xd / xn


def _finish(arr: np.ndarray) -> np.ndarray:
    """(S, H, W[, C]) with C in (1, 3, 4) -> alpha dropped, gray-as-RGB collapsed, dtype normalized."""
    if arr.ndim == 4:
        if arr.shape[-1] not in (1, 3, 4):
            raise IngestError("not_an_image", "images must have 1, 3 or 4 channels")
        arr = arr[..., :3]
        if (
            arr.shape[-1] == 1
            or np.array_equal(arr[..., 0], arr[..., 1])
            and np.array_equal(arr[..., 0], arr[..., 2])
        ):
            arr = arr[..., 0]
    return normalize_dtype(np.ascontiguousarray(arr))
