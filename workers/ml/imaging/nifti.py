"""NIfTI-1/2 (.nii, and .nii.gz after `sniff.gunzip_limited`) into axial slices.

Axis order: the volume is reoriented to RAS+ (nibabel.as_closest_canonical), so voxel (i, j, k) runs
to the patient's Right, Anterior, Superior. Slice s is the axial plane k = s (inferior to superior), and
inside a slice pixel (h, w) = voxel (i = nx-1-w, j = ny-1-h): rows run anterior -> posterior and columns
patient right -> left, the same display as an axial DICOM image. Result: (S, H, W) = (nz, ny, nx).
"""

from __future__ import annotations

import nibabel as nib
import numpy as np

from workers.ml.imaging.errors import IngestError, Limits
from workers.ml.imaging.model import normalize_dtype


def read_nifti(
    data: bytes, limits: Limits
) -> tuple[np.ndarray, tuple[float, float, float], list[list[float]]]:
    """Uncompressed NIfTI bytes -> (pixels (S, H, W), (row_mm, col_mm, slice_mm), affine (s, h, w) -> RAS)."""
    image = _load(data)
    shape = tuple(int(n) for n in image.shape)
    if len(shape) > 3 and any(n != 1 for n in shape[3:]):
        raise IngestError("not_an_image", "4-D NIfTI (time series or vectors) is not supported")
    limits.check_pixels(int(np.prod(shape[:3], dtype=np.int64)))
    canonical = nib.as_closest_canonical(_squeeze_to_3d(image))
    try:
        volume = np.asanyarray(canonical.dataobj)
    except Exception:
        raise IngestError("not_an_image", "the NIfTI voxel data is truncated or unreadable") from None
    if volume.dtype.kind not in "biuf" or volume.ndim != 3:
        raise IngestError("not_an_image", "NIfTI data must be a scalar 3-D volume (no RGB/complex)")
    dx, dy, dz = (float(z) for z in canonical.header.get_zooms()[:3])
    pixels = normalize_dtype(np.ascontiguousarray(to_slices(volume)))
    return pixels, (dy, dx, dz), slice_affine(np.asarray(canonical.affine), volume.shape)


def to_slices(volume: np.ndarray) -> np.ndarray:
    """RAS (X, Y, Z) -> (S, H, W) = (Z, Y flipped, X flipped); the inverse is `from_slices`."""
    return np.transpose(volume[::-1, ::-1, :], (2, 1, 0))


def from_slices(pixels: np.ndarray) -> np.ndarray:
    """(S, H, W) from `to_slices` -> RAS (X, Y, Z), e.g. to export a mask as NIfTI with the source affine."""
    return np.transpose(pixels, (2, 1, 0))[::-1, ::-1, :]


def slice_affine(ras_affine: np.ndarray, shape: tuple[int, ...]) -> list[list[float]]:
    """Compose the canonical voxel affine with index (s, h, w) -> (i, j, k) = (nx-1-w, ny-1-h, s)."""
    nx, ny = shape[0], shape[1]
    index_to_voxel = np.array(
        [[0, 0, -1, nx - 1], [0, -1, 0, ny - 1], [1, 0, 0, 0], [0, 0, 0, 1]],
        dtype=np.float64,
    )
    return (ras_affine @ index_to_voxel).tolist()


def _load(data: bytes) -> nib.Nifti1Image | nib.Nifti2Image:
    for cls in (nib.Nifti1Image, nib.Nifti2Image):
        try:
            return cls.from_bytes(data)
        except Exception:  # noqa: S112 - the wrong header version raises; try the other
            continue
    raise IngestError("not_an_image", "the NIfTI header could not be read")


def _squeeze_to_3d(image: nib.Nifti1Image | nib.Nifti2Image) -> nib.Nifti1Image | nib.Nifti2Image:
    if len(image.shape) == 3:
        return image
    if len(image.shape) == 2:  # a single slice: give it a slice axis
        data = np.asanyarray(image.dataobj)[:, :, np.newaxis]
    else:
        data = np.asanyarray(image.dataobj).reshape(image.shape[:3])
    return type(image)(data, image.affine, image.header)
