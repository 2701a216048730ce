"""Reading one DICOM file from bytes: validation, pixel decoding, rescale, metadata for display.

pydicom reports odd values through `warnings` and the "pydicom" logger, quoting the values (PHI). All
pydicom work here runs inside `quiet()`, which silences both for the current context only.
"""

from __future__ import annotations

import contextlib
import contextvars
import io
import logging
import warnings
from collections.abc import Iterator

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filereader import read_dataset as pydicom_read_dataset
from pydicom.filereader import read_preamble
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian

from workers.ml.imaging.errors import IngestError, Limits
from workers.ml.imaging.model import integral_or_float, normalize_dtype
from workers.ml.imaging.sniff import inflate_limited, inflate_prefix

_QUIET: contextvars.ContextVar[bool] = contextvars.ContextVar("hitl_quiet_pydicom", default=False)
_UNDEFINED_LENGTH = 0xFFFFFFFF
_PIXEL_TAGS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_CORE_TAGS = ("Rows", "Columns", "BitsAllocated", "SamplesPerPixel")
_XR = {"CR", "DX", "DR", "RG", "RF", "XA", "MG", "PX", "IO", "DF"}
_METADATA_BYTES = 1 << 20  # inflated bytes read to find a deflated dataset's image size
_PIXEL_DATA_TAG = 0x7FE00010


class _QuietFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not _QUIET.get()


def _install_filters() -> None:
    """Filter every pydicom logger: a filter applies only where a record is created, not to children."""
    names = [n for n in list(logging.Logger.manager.loggerDict) if n == "pydicom" or n.startswith("pydicom.")]
    for name in ["pydicom", *names]:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _QuietFilter) for f in logger.filters):
            logger.addFilter(_QuietFilter())


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence pydicom warnings and log records (they may quote PHI) within this block."""
    _install_filters()
    token = _QUIET.set(True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        _QUIET.reset(token)


def read_dataset(data: bytes, *, has_preamble: bool, limits: Limits) -> Dataset:
    """Parse DICOM bytes. Preconditions: caller holds `quiet()`.

    has_preamble: the bytes carry the 128-byte preamble + "DICM" (sniffed). Without it the dataset is
    read with force and accepted only when it has pixel data and the core image tags; anything else is
    "not_an_image". With it, damage is "malformed_dicom" and a missing pixel element "no_pixel_data".
    A deflated dataset is inflated by us, no further than its declared image needs (pydicom would inflate
    without bound: 1 MB became 1.1 GB).
    """
    try:
        ds = _read_deflated(data, limits) if has_preamble else None
        if ds is None:
            ds = pydicom.dcmread(io.BytesIO(data), force=not has_preamble)
    except IngestError:
        raise
    except Exception:  # pydicom raises many types; their text may quote values, so drop it
        if has_preamble:
            raise IngestError("malformed_dicom", "the DICOM file could not be parsed") from None
        raise IngestError("not_an_image", "the file is not a recognised image format") from None
    if not has_preamble and not (_has_pixels(ds) and all(t in ds for t in _CORE_TAGS)):
        raise IngestError("not_an_image", "the file is not a recognised image format")
    if _is_truncated(ds) or "SOPClassUID" not in ds and not _has_pixels(ds):
        raise IngestError("malformed_dicom", "the DICOM file is truncated or damaged")
    if not _has_pixels(ds):
        raise IngestError("no_pixel_data", "the DICOM file has no pixel data (not an image)")
    _ensure_transfer_syntax(ds)
    return ds


def _read_deflated(data: bytes, limits: Limits) -> Dataset | None:
    """The dataset of a Deflated Explicit VR Little Endian file, re-labelled Explicit VR Little Endian
    (what it is once inflated); None for any other transfer syntax."""
    fp = io.BytesIO(data)
    read_preamble(fp, False)
    meta = FileMetaDataset(
        pydicom_read_dataset(fp, is_implicit_VR=False, is_little_endian=True, stop_when=_after_meta)
    )
    if meta.get("TransferSyntaxUID") != DeflatedExplicitVRLittleEndian:
        return None
    body = data[fp.tell() :]
    declared = _declared_pixel_bytes(inflate_prefix(body, _METADATA_BYTES, wbits=-15), limits)
    inflated = inflate_limited(body, min(limits.max_uncompressed_bytes, declared + _METADATA_BYTES))
    ds = pydicom_read_dataset(io.BytesIO(inflated), is_implicit_VR=False, is_little_endian=True)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    return ds


def _after_meta(tag: object, vr: object, length: object) -> bool:
    return getattr(tag, "group", 0) != 0x0002


def _declared_pixel_bytes(head: bytes, limits: Limits) -> int:
    """Image size declared by the attributes before PixelData, checked against the limits."""
    ds = pydicom_read_dataset(
        io.BytesIO(head),
        is_implicit_VR=False,
        is_little_endian=True,
        stop_when=lambda tag, vr, length: int(tag) >= _PIXEL_DATA_TAG,
    )
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    limits.check_slice(rows, cols)
    limits.check_pixels(rows * cols * frames)
    samples, bits = int(ds.get("SamplesPerPixel", 1) or 1), int(ds.get("BitsAllocated", 16) or 16)
    return rows * cols * frames * samples * max(bits, 8) // 8


def _ensure_transfer_syntax(ds: Dataset) -> FileMetaDataset:
    """A bare dataset has no file meta; record the encoding it was read with (pydicom needs it to decode)."""
    if getattr(ds, "file_meta", None) is None:
        ds.file_meta = FileMetaDataset()
    meta = ds.file_meta
    if "TransferSyntaxUID" not in meta:
        implicit, little = getattr(ds, "original_encoding", (True, True))
        meta.TransferSyntaxUID = (
            pydicom.uid.ImplicitVRLittleEndian
            if implicit
            else pydicom.uid.ExplicitVRLittleEndian
            if little
            else pydicom.uid.ExplicitVRBigEndian
        )
    return meta


def _has_pixels(ds: Dataset) -> bool:
    return any(t in ds for t in _PIXEL_TAGS)


def _is_truncated(ds: Dataset) -> bool:
    """pydicom reads a cut-off file silently; the last element then holds fewer bytes than it declares."""
    raw = getattr(ds, "_dict", {})
    if not raw:
        return False
    last = raw[max(raw)]
    length = getattr(last, "length", None)
    value = getattr(last, "value", None)
    if length is None or length == _UNDEFINED_LENGTH or not isinstance(value, bytes):
        return False
    return len(value) < length


def transfer_syntax(ds: Dataset) -> UID | None:
    meta = getattr(ds, "file_meta", None)
    uid = meta.get("TransferSyntaxUID") if meta is not None else None
    return UID(str(uid)) if uid else None


def decode_frames(ds: Dataset, limits: Limits) -> np.ndarray:
    """Decoded frames (F, H, W) or (F, H, W, 3) RGB, modality rescale applied to grayscale.

    Preconditions: caller holds `quiet()`. Compressed data that no installed decoder reads (or that the
    decoder rejects) is "unsupported_transfer_syntax"; native data shorter than declared "malformed_dicom".
    """
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    limits.check_slice(rows, cols)
    limits.check_pixels(rows * cols * frames)
    arr = _pixel_array(ds)
    if str(ds.get("PhotometricInterpretation", "")).strip() == "PALETTE COLOR":
        arr = pydicom.pixels.apply_color_lut(arr, ds)
    rgb = is_rgb(ds)
    if frames == 1:
        arr = arr[np.newaxis]
    if rgb:
        return normalize_dtype(arr)
    return _rescale(arr, ds)


def is_rgb(ds: Dataset) -> bool:
    """Colour after decoding: three samples per pixel, or a palette that `decode_frames` expands."""
    palette = str(ds.get("PhotometricInterpretation", "")).strip() == "PALETTE COLOR"
    return palette or int(ds.get("SamplesPerPixel", 1) or 1) == 3


def _pixel_array(ds: Dataset) -> np.ndarray:
    ts = transfer_syntax(ds)
    try:
        return ds.pixel_array
    except Exception:
        if ts is not None and (not ts.is_transfer_syntax or ts.is_compressed):
            name = ts.name if ts.is_transfer_syntax else "an unknown transfer syntax"
            raise IngestError(
                "unsupported_transfer_syntax",
                f"pixel data in {name} could not be decoded (no decoder installed, or the data is damaged)",
            ) from None
        raise IngestError("malformed_dicom", "the DICOM pixel data is truncated or inconsistent") from None


def _rescale(arr: np.ndarray, ds: Dataset) -> np.ndarray:
    """Apply the modality LUT (RescaleSlope/Intercept): CT -> HU. Integral results become int16."""
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    if slope == 1.0 and intercept == 0.0:
        return normalize_dtype(arr)
    return integral_or_float(arr.astype(np.float64) * slope + intercept)


def window_presets(ds: Dataset) -> list[tuple[str, float, float]]:
    """(name, center, width) pairs from WindowCenter/WindowWidth (multi-valued or not)."""
    centers, widths = _floats(ds.get("WindowCenter")), _floats(ds.get("WindowWidth"))
    names = [str(n) for n in _as_list(ds.get("WindowCenterWidthExplanation"))]
    presets = []
    for i, (center, width) in enumerate(zip(centers, widths, strict=False)):
        if width > 0:
            name = names[i].strip() if i < len(names) and names[i].strip() else f"preset {i + 1}"
            presets.append((name[:64], center, width))
    return presets


def _as_list(value: object) -> list[object]:
    if value is None or value == "":
        return []
    if isinstance(value, str | bytes | int | float):
        return [value]
    return list(value)  # type: ignore[call-overload]


def _floats(value: object) -> list[float]:
    out = []
    for v in _as_list(value):
        try:
            out.append(float(v))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            continue
    return out


def modality_of(ds: Dataset, rgb: bool) -> str:
    """Map DICOM Modality to CT/MR/XR/PATH/OT; RGB with no specific modality counts as pathology."""
    value = str(ds.get("Modality", "") or "").strip().upper()
    if value in ("CT", "MR"):
        return value
    if value in _XR:
        return "XR"
    if value == "SM" or rgb and value in ("", "OT", "GM"):
        return "PATH"
    return "OT"


def pixel_spacing(ds: Dataset) -> tuple[float, float]:
    """(row_mm, col_mm) from PixelSpacing, else ImagerPixelSpacing, else (1, 1)."""
    for key in ("PixelSpacing", "ImagerPixelSpacing"):
        values = _floats(ds.get(key))
        if len(values) == 2 and all(v > 0 for v in values):
            return values[0], values[1]
    return 1.0, 1.0


def slice_thickness(ds: Dataset) -> float:
    for key in ("SpacingBetweenSlices", "SliceThickness"):
        values = _floats(ds.get(key))
        if values and values[0] > 0:
            return abs(values[0])
    return 1.0


def orientation(ds: Dataset) -> tuple[np.ndarray, np.ndarray] | None:
    """(ImageOrientationPatient as 2x3 row/col cosines, ImagePositionPatient) or None when absent."""
    iop, ipp = _floats(ds.get("ImageOrientationPatient")), _floats(ds.get("ImagePositionPatient"))
    if len(iop) != 6 or len(ipp) != 3:
        return None
    return np.asarray(iop, dtype=np.float64).reshape(2, 3), np.asarray(ipp, dtype=np.float64)


def complete_sop_uids(ds: Dataset, fallback_instance: str) -> None:
    """Make the dataset's SOP Class/Instance UIDs and the file meta agree, filling empty ones.

    Some exporters blank SOPClassUID/SOPInstanceUID in the dataset and keep them only in the file meta;
    when neither has an instance UID, `fallback_instance` (derived from the pixels by the caller) is used.
    Preconditions: `ds` is already de-identified (its UIDs are remapped ones).
    """
    meta = _ensure_transfer_syntax(ds)
    sop_class = UID(_text(ds.get("SOPClassUID")) or _text(meta.get("MediaStorageSOPClassUID")))
    if not sop_class:
        raise IngestError("malformed_dicom", "the DICOM file has no SOP Class UID")
    instance = UID(
        _text(ds.get("SOPInstanceUID")) or _text(meta.get("MediaStorageSOPInstanceUID")) or fallback_instance
    )
    ds.SOPClassUID = meta.MediaStorageSOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID = instance


def _text(value: object) -> str:
    return str(value or "").strip().rstrip("\x00")


def to_part10(ds: Dataset) -> bytes:
    """Write `ds` as a DICOM Part 10 file (preamble + meta), keeping its encoding and pixel data as is."""
    _ensure_transfer_syntax(ds)
    buf = io.BytesIO()
    try:
        ds.save_as(buf, enforce_file_format=True)
    except Exception:
        raise IngestError("malformed_dicom", "the de-identified DICOM file could not be written") from None
    return buf.getvalue()
