"""Assembling DICOM files into de-identified images: one ParsedImage per series (a volume).

Files are grouped by their original SeriesInstanceUID, sorted along the slice normal
(ImageOrientationPatient x ImagePositionPatient; fallback InstanceNumber, then upload order), checked for a
consistent geometry, decoded, de-identified and re-written. A file without SeriesInstanceUID is its own series.
"""

from __future__ import annotations

import hashlib

import numpy as np
from pydicom.dataset import Dataset

from workers.ml.imaging.deid import DeidContext, deidentify
from workers.ml.imaging.dicom import (
    complete_sop_uids,
    decode_frames,
    is_rgb,
    modality_of,
    orientation,
    pixel_spacing,
    slice_thickness,
    to_part10,
    window_presets,
)
from workers.ml.imaging.errors import IngestError, Limits
from workers.ml.imaging.model import DicomUids, ParsedImage, content_hash, normalize_dtype

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_MIN_GAP_MM = 1e-3


def dicom_images(datasets: list[Dataset], ctx: DeidContext, limits: Limits) -> list[ParsedImage]:
    """One ParsedImage per series, in order of first appearance. Preconditions: caller holds `quiet()`."""
    groups: dict[str, list[Dataset]] = {}
    for i, ds in enumerate(datasets):
        groups.setdefault(_series_key(ds, i), []).append(ds)
    return [_guarded(group, key, ctx, limits, n) for n, (key, group) in enumerate(groups.items(), start=1)]


def _series_key(ds: Dataset, index: int) -> str:
    """SeriesInstanceUID; when an exporter blanked it, the frame of reference + size + orientation +
    SeriesNumber (slices from two series that collide on all of these share positions and are refused)."""
    series = str(ds.get("SeriesInstanceUID", "") or "").strip()
    if series:
        return "series:" + series
    frame = str(ds.get("FrameOfReferenceUID", "") or "").strip()
    geometry = orientation(ds)
    if not frame or geometry is None:
        return f"file:{index}"
    iop = ",".join(f"{v:.3f}" for v in geometry[0].ravel())
    return f"frame:{frame}|{ds.get('Rows')}x{ds.get('Columns')}|{iop}|{ds.get('SeriesNumber', '')}"


def _guarded(group: list[Dataset], key: str, ctx: DeidContext, limits: Limits, number: int) -> ParsedImage:
    """pydicom converts values lazily, so a bad value (e.g. IS "1A") can raise anywhere below."""
    try:
        return _series_image(group, key, ctx, limits, number)
    except IngestError:
        raise
    except Exception:  # the text may quote the offending value: never chain it
        raise IngestError("malformed_dicom", "the DICOM file has invalid or inconsistent values") from None


def _series_image(
    group: list[Dataset], key: str, ctx: DeidContext, limits: Limits, number: int
) -> ParsedImage:
    if len(group) > 1:
        _check_consistent(group)
    limits.check_pixels(sum(_n_pixels(ds) for ds in group))
    group, step = _sort_slices(group)
    first = group[0]
    deidentified = [deidentify(ds, ctx) for ds in group]  # before decoding: refuse burned-in PHI first
    for ds in deidentified:
        complete_sop_uids(ds, ctx.remap_uid("pixels:" + hashlib.sha256(ds.PixelData).hexdigest()))
        _fill_blank_uid(ds, "SeriesInstanceUID", ctx.remap_uid(key))  # so the volume stays one series
        _fill_blank_uid(ds, "StudyInstanceUID", ctx.remap_uid("study-of:" + key))
    pixels = normalize_dtype(np.concatenate([decode_frames(ds, limits) for ds in group], axis=0))
    presets = window_presets(first)
    if str(first.get("PhotometricInterpretation", "")).strip() == "MONOCHROME1":
        pixels, presets = _invert(pixels, presets)
    row_mm, col_mm = pixel_spacing(first)
    slice_mm = float(np.linalg.norm(step)) if step is not None else slice_thickness(first)
    modality = modality_of(first, is_rgb(first))
    return ParsedImage(
        pixels=pixels,
        spacing=(row_mm, col_mm, slice_mm),
        modality=modality,
        source_kind="dicom_series" if len(group) > 1 else "dicom",
        display_name=f"{modality} series {number}",
        window_presets=presets,
        uids=_uids(deidentified),
        dicom_files=[to_part10(ds) for ds in deidentified],
        affine=_affine(first, step, len(group)),
        content_hash=content_hash(pixels),
    )


def _fill_blank_uid(ds: Dataset, keyword: str, uid: str) -> None:
    if not str(ds.get(keyword, "") or "").strip():
        setattr(ds, keyword, uid)


def _n_pixels(ds: Dataset) -> int:
    return (
        int(ds.get("Rows", 0) or 0) * int(ds.get("Columns", 0) or 0) * int(ds.get("NumberOfFrames", 1) or 1)
    )


def _check_consistent(group: list[Dataset]) -> None:
    """Every slice of a multi-file series: single-frame, same Rows/Columns/SamplesPerPixel."""
    shapes = {(ds.get("Rows"), ds.get("Columns"), ds.get("SamplesPerPixel", 1)) for ds in group}
    if len(shapes) != 1:
        raise IngestError("inconsistent_series", "the slices of a series differ in size or colour")
    if any(int(ds.get("NumberOfFrames", 1) or 1) != 1 for ds in group):
        raise IngestError("inconsistent_series", "a multi-file series contains a multi-frame file")


def _sort_slices(group: list[Dataset]) -> tuple[list[Dataset], np.ndarray | None]:
    """Slices in order along the normal and the step vector (mm, LPS) from one slice to the next.

    The step is None when positions are unknown (then InstanceNumber, else upload order, decides).
    A single slice with orientation steps one slice thickness along the normal.
    """
    geometry = [orientation(ds) for ds in group]
    if any(g is None for g in geometry):
        if all("InstanceNumber" in ds and ds.InstanceNumber is not None for ds in group):
            group = sorted(group, key=lambda ds: int(ds.InstanceNumber))
        return group, None
    cosines = [g[0] for g in geometry]  # type: ignore[index]
    if not all(np.allclose(c, cosines[0], atol=1e-3) for c in cosines):
        raise IngestError("inconsistent_series", "the slices of a series have different orientations")
    normal = np.cross(cosines[0][0], cosines[0][1])
    positions = np.stack([g[1] for g in geometry])  # type: ignore[index]
    order = np.argsort(positions @ normal, kind="stable")
    if len(group) == 1:
        return group, normal * slice_thickness(group[0])
    gaps = np.diff((positions @ normal)[order])
    if np.any(gaps < _MIN_GAP_MM):
        raise IngestError("inconsistent_series", "two slices of a series share the same position")
    step = (positions[order[-1]] - positions[order[0]]) / (len(group) - 1)
    return [group[i] for i in order], step


def _affine(first: Dataset, step: np.ndarray | None, n_slices: int) -> list[list[float]] | None:
    """Index (s, h, w, 1) -> RAS mm. DICOM positions are LPS, hence the final flip of x and y."""
    geometry = orientation(first)
    if geometry is None or step is None or int(first.get("NumberOfFrames", 1) or 1) != 1:
        return None
    (row_cos, col_cos), origin = geometry
    row_mm, col_mm = pixel_spacing(first)
    lps = np.eye(4)
    lps[:3, 0] = step  # s
    lps[:3, 1] = col_cos * row_mm  # h: moving down a column, one row spacing
    lps[:3, 2] = row_cos * col_mm  # w: moving along a row, one column spacing
    lps[:3, 3] = origin
    return (_LPS_TO_RAS @ lps).tolist()


def _invert(
    pixels: np.ndarray, presets: list[tuple[str, float, float]]
) -> tuple[np.ndarray, list[tuple[str, float, float]]]:
    """MONOCHROME1 (low = white) -> MONOCHROME2 by v' = lo + hi - v; windows move with it, widths stay."""
    lo, hi = pixels.min(), pixels.max()
    total = float(lo) + float(hi)
    inverted = (np.asarray(total, dtype=np.float64) - pixels).astype(pixels.dtype)
    return inverted, [(name, total - center, width) for name, center, width in presets]


def _uids(deidentified: list[Dataset]) -> DicomUids:
    first = deidentified[0]

    def get(key: str) -> str | None:
        value = str(first.get(key, "") or "").strip()
        return value or None

    return DicomUids(
        study=get("StudyInstanceUID"),
        series=get("SeriesInstanceUID"),
        frame_of_reference=get("FrameOfReferenceUID"),
        sop_instances=tuple(str(ds.get("SOPInstanceUID", "")) for ds in deidentified),
    )
