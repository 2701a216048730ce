"""Output types of ingestion and the helpers every parser shares."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

# dtypes a ParsedImage may hold; anything else is converted by `normalize_dtype`.
PIXEL_DTYPES = (np.dtype(np.uint8), np.dtype(np.int16), np.dtype(np.uint16), np.dtype(np.float32))


@dataclass(frozen=True)
class DicomUids:
    """De-identified UIDs of one DICOM image or series; `sop_instances` in slice order."""

    study: str | None
    series: str | None
    frame_of_reference: str | None
    sop_instances: tuple[str, ...]


@dataclass(frozen=True)
class ParsedImage:
    """One validated, de-identified image or volume, ready to store.

    pixels: (S, H, W) grayscale or (S, H, W, 3) RGB, S = 1 for 2D; dtype uint8, int16, uint16 or float32
        (the stored dtype where it is one of those; DICOM with a rescale is in output units, e.g. CT in HU).
        Row h runs top to bottom, column w left to right as displayed; for axial volumes this is the DICOM
        and radiological convention (top = anterior, left of the image = patient right).
    spacing: (row_mm, col_mm, slice_mm): distance between rows, between columns, between slices.
    affine: 4x4 nested list mapping the index (s, h, w, 1) to RAS+ millimetres (the NIfTI world), for
        NIfTI and for DICOM with orientation + position; None for plain 2D images.
    window_presets: (name, center, width) in the units of `pixels`.
    uids: de-identified DICOM UIDs, None for non-DICOM sources.
    dicom_files: de-identified DICOM Part 10 files, one per slice in slice order (for DICOM sources).
    content_hash: sha256 hex of shape + dtype + pixel bytes (see `content_hash`), to detect duplicates.
    """

    pixels: np.ndarray
    spacing: tuple[float, float, float]
    modality: str
    source_kind: str
    display_name: str
    window_presets: list[tuple[str, float, float]] = field(default_factory=list)
    uids: DicomUids | None = None
    dicom_files: list[bytes] = field(default_factory=list)
    affine: list[list[float]] | None = None
    content_hash: str = ""


def content_hash(pixels: np.ndarray) -> str:
    """sha256 over "shape|dtype|" and the C-ordered little-endian pixel bytes (no copy when contiguous)."""
    arr = np.ascontiguousarray(pixels)
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    digest = hashlib.sha256(f"{tuple(arr.shape)}|{arr.dtype.str}|".encode())
    digest.update(arr.data)  # C-contiguous: hashed in place, no copy
    return digest.hexdigest()


def normalize_dtype(arr: np.ndarray) -> np.ndarray:
    """Convert to native byte order and to one of PIXEL_DTYPES, exactly when the values allow.

    bool/int8 -> uint8/int16; wider integers -> the narrowest of uint8/int16/uint16 that holds the
    value range, else float32; float64 -> float32.
    """
    if arr.dtype.byteorder not in ("=", "|"):
        arr = arr.astype(arr.dtype.newbyteorder("="))
    if arr.dtype in PIXEL_DTYPES:
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8)
    if np.issubdtype(arr.dtype, np.integer):
        lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
        for dtype in (np.uint8, np.int16, np.uint16):
            info = np.iinfo(dtype)
            if info.min <= lo and hi <= info.max:
                return arr.astype(dtype)
    return arr.astype(np.float32)


def integral_or_float(arr: np.ndarray) -> np.ndarray:
    """float data that holds only integers in int16 range -> int16 (e.g. CT HU), else float32."""
    if arr.size and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
        if arr.min() >= np.iinfo(np.int16).min and arr.max() <= np.iinfo(np.int16).max:
            return arr.astype(np.int16)
    return arr.astype(np.float32)
