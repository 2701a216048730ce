"""Entry points for the upload API and `import_images`: bytes in, validated de-identified images out."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from pydicom.dataset import Dataset

from workers.ml.imaging.archive import zip_members
from workers.ml.imaging.deid import DeidContext
from workers.ml.imaging.dicom import quiet, read_dataset
from workers.ml.imaging.errors import IngestError, Limits
from workers.ml.imaging.model import ParsedImage, content_hash
from workers.ml.imaging.nifti import HEADER_BYTES, check_nifti_header, nifti_header, read_nifti
from workers.ml.imaging.raster import read_png, read_tiff
from workers.ml.imaging.series import dicom_images
from workers.ml.imaging.sniff import gunzip_limited, inflate_prefix, is_nifti, sniff

_SKIPPABLE_IN_ZIP = ("not_an_image", "no_pixel_data")  # README.txt, DICOMDIR, reports next to the images
_GZIP_SLACK = 1 << 20  # trailing bytes tolerated after a gzipped NIfTI's last voxel


def parse_upload(data: bytes, filename: str = "", *, ctx: DeidContext, limits: Limits) -> list[ParsedImage]:
    """Sniff, validate, decode and de-identify one uploaded file into one or more images.

    Formats are recognised by content: DICOM (Part 10, or a bare dataset that has pixel data and the core
    image tags), PNG, TIFF, NIfTI (.nii, gzipped .nii.gz), and ZIP archives of those. DICOM files in a zip
    become one image per series; every other file is its own image. `filename` is ignored: file names
    often carry patient names and record numbers, so they never name an image nor reach a message
    (`display_name` is a neutral kind such as "image" or "CT series"). Raises IngestError (errors.py).
    """
    del filename
    _check_size(data, limits)
    kind = sniff(data)
    with quiet():
        if kind == "zip":
            return _parse_zip(data, ctx, limits)
        return _parse_single(data, kind, ctx, limits)


def parse_mask(
    data: bytes,
    filename: str,
    *,
    expected_shape: tuple[int, ...],
    allowed_labels: set[int],
    limits: Limits,
) -> np.ndarray:
    """A label map for an image parsed by `parse_upload`, as uint8 (S, H, W) in the same orientation.

    Accepts PNG (palette indices are labels), TIFF and NIfTI (.nii/.nii.gz, reoriented like the images).
    expected_shape: the image's `pixels.shape` ((S, H, W), or (S, H, W, 3) whose channel axis is ignored),
        or (H, W) for a 2D image. 0 is always allowed (background); every other value must be in
        `allowed_labels`. Raises mask_shape_mismatch, mask_labels_invalid, or a format error code.
    """
    del filename  # accepted for symmetry with parse_upload; the format is sniffed from content
    _check_size(data, limits)
    arr = _read_label_map(data, limits)
    if arr.ndim != 3:
        raise IngestError("mask_labels_invalid", "a mask must be a single-channel label map, not colour")
    expected = _expected_shape(expected_shape)
    if tuple(arr.shape) != expected:
        raise IngestError(
            "mask_shape_mismatch", f"mask shape {tuple(arr.shape)} does not match image {expected}"
        )
    return _validate_labels(arr, allowed_labels)


def _check_size(data: bytes, limits: Limits) -> None:
    if len(data) > limits.max_file_bytes:
        raise IngestError("too_large", f"the file is {len(data)} bytes, more than {limits.max_file_bytes}")


def _parse_single(data: bytes, kind: str, ctx: DeidContext, limits: Limits) -> list[ParsedImage]:
    if kind in ("dicom", "unknown"):
        return dicom_images([read_dataset(data, has_preamble=kind == "dicom", limits=limits)], ctx, limits)
    if kind == "png":
        return [_plain_image(read_png(data, limits), (1.0, 1.0, 1.0), "png")]
    if kind == "tiff":
        pixels, (row_mm, col_mm) = read_tiff(data, limits)
        return [_plain_image(pixels, (row_mm, col_mm, 1.0), "tiff")]
    if kind == "gzip":
        data = gunzip_nifti(data, limits)
    if kind in ("gzip", "nifti"):
        pixels, spacing, affine = read_nifti(data, limits)
        return [_plain_image(pixels, spacing, "nifti", affine)]
    raise IngestError("not_an_image", "the file is not a recognised image format")


def gunzip_nifti(data: bytes, limits: Limits) -> bytes:
    """A gzipped NIfTI, inflated no further than its own header says it can be: the header is read from
    the first inflated bytes and checked, and the rest may produce only the voxels it declares (a 2.6 MB
    .nii.gz can no longer expand to 2 GB)."""
    head = inflate_prefix(data, HEADER_BYTES, wbits=31)
    if not is_nifti(head):
        raise IngestError("not_an_image", "a gzip file must contain a NIfTI image")
    header = nifti_header(head)
    check_nifti_header(header, limits, data_len=None)
    return gunzip_limited(data, min(limits.max_uncompressed_bytes, header.file_bytes + _GZIP_SLACK))


def _plain_image(
    pixels: np.ndarray,
    spacing: tuple[float, float, float],
    source_kind: str,
    affine: list[list[float]] | None = None,
) -> ParsedImage:
    """A non-DICOM image: no metadata to de-identify; colour is taken for a pathology tile."""
    return ParsedImage(
        pixels=pixels,
        spacing=spacing,
        modality="PATH" if pixels.ndim == 4 else "OT",
        source_kind=source_kind,
        display_name="volume" if source_kind == "nifti" else "image",
        affine=affine,
        content_hash=content_hash(pixels),
    )


def _parse_zip(data: bytes, ctx: DeidContext, limits: Limits) -> list[ParsedImage]:
    """DICOM members are grouped into series; other images stay one per file; non-images are skipped."""
    datasets: list[Dataset] = []
    others: list[ParsedImage] = []
    for number, (_name, blob) in enumerate(zip_members(data, limits), start=1):
        kind = sniff(blob)
        if kind == "zip":
            continue  # nested archives are not expanded: one level of untrusted decompression is enough
        try:
            if kind in ("dicom", "unknown"):
                datasets.extend(_skip_non_images([blob], kind == "dicom", limits))
            else:
                others.extend(_parse_single(blob, kind, ctx, limits))
        except IngestError as err:  # say which member, by position only (its name may carry PHI)
            raise IngestError(err.code, f"archive member {number}: {err}") from None
    images = (dicom_images(datasets, ctx, limits) if datasets else []) + others
    if not images:
        raise IngestError("empty_archive", "the archive contains no image")
    return images


def _skip_non_images(blobs: Iterable[bytes], has_preamble: bool, limits: Limits) -> list[Dataset]:
    out = []
    for blob in blobs:
        try:
            out.append(read_dataset(blob, has_preamble=has_preamble, limits=limits))
        except IngestError as err:
            if err.code not in _SKIPPABLE_IN_ZIP:
                raise
    return out


def _read_label_map(data: bytes, limits: Limits) -> np.ndarray:
    kind = sniff(data)
    if kind == "png":
        return read_png(data, limits, labels=True)
    if kind == "tiff":
        return read_tiff(data, limits)[0]
    if kind == "gzip":
        data = gunzip_nifti(data, limits)
        kind = "nifti"
    if kind == "nifti":
        return read_nifti(data, limits)[0]
    raise IngestError("not_an_image", "a mask must be a PNG, TIFF or NIfTI file")


def _expected_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    dims = tuple(int(n) for n in shape)
    if len(dims) == 2:
        return (1, *dims)
    if len(dims) in (3, 4):
        return dims[:3]
    raise ValueError("expected_shape must be (H, W), (S, H, W) or (S, H, W, 3)")


def _validate_labels(arr: np.ndarray, allowed_labels: set[int]) -> np.ndarray:
    if arr.dtype.kind == "f" and not (np.all(np.isfinite(arr)) and np.all(arr == np.round(arr))):
        raise IngestError("mask_labels_invalid", "mask values must be whole numbers")
    values = {int(v) for v in np.unique(arr)}
    bad = sorted(values - {0} - {int(v) for v in allowed_labels})
    if bad or min(values, default=0) < 0 or max(values, default=0) > 255:
        shown = ", ".join(str(v) for v in bad[:10])
        raise IngestError("mask_labels_invalid", f"mask has labels not allowed in this project: {shown}")
    return np.ascontiguousarray(arr.astype(np.uint8))
