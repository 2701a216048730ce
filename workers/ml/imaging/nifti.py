"""NIfTI-1/2 (.nii, and .nii.gz after `sniff.gunzip_limited`) into axial slices.

Axis order: the volume is reoriented to RAS+ (nibabel.as_closest_canonical), so voxel (i, j, k) runs
to the patient's Right, Anterior, Superior. Slice s is the axial plane k = s (inferior to superior), and
inside a slice pixel (h, w) = voxel (i = nx-1-w, j = ny-1-h): rows run anterior -> posterior and columns
patient right -> left, the same display as an axial DICOM image. Result: (S, H, W) = (nz, ny, nx).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import nibabel as nib
import numpy as np

from workers.ml.imaging.errors import IngestError, Limits
from workers.ml.imaging.model import normalize_dtype

# NIfTI datatype code -> bytes per voxel, for the scalar types we read (no complex, RGB or float128).
_SCALAR_ITEMSIZE = {2: 1, 4: 2, 8: 4, 16: 4, 64: 8, 256: 1, 512: 2, 768: 4, 1024: 8, 1280: 8}
HEADER_BYTES = 540  # enough for either header version


@dataclass(frozen=True)
class NiftiHeader:
    """What the header declares, read with `struct` alone (no array is allocated)."""

    shape: tuple[int, ...]
    datatype: int
    vox_offset: int
    single_file: bool  # "n+1"/"n+2": voxels follow the header in the same file

    @property
    def data_bytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * _SCALAR_ITEMSIZE.get(self.datatype, 0)

    @property
    def file_bytes(self) -> int:
        """The size a single-file image must have at least: header, extensions, then every voxel."""
        return self.vox_offset + self.data_bytes


def nifti_header(head: bytes) -> NiftiHeader:
    """Parse the first bytes of a NIfTI-1/2 file (at least 348/540). Raises not_an_image when malformed."""
    version, endian = _version(head)
    if version == 1:
        ndim, *dims = struct.unpack_from(endian + "8h", head, 40)
        (datatype,) = struct.unpack_from(endian + "h", head, 70)
        vox_offset = struct.unpack_from(endian + "f", head, 108)[0]
        single = head[344:348] == b"n+1\x00"
    else:
        (datatype,) = struct.unpack_from(endian + "h", head, 12)
        ndim, *dims = struct.unpack_from(endian + "8q", head, 16)
        (vox_offset,) = struct.unpack_from(endian + "q", head, 168)
        single = head[4:8] == b"n+2\x00"
    if not 1 <= ndim <= 7 or any(n < 1 for n in dims[:ndim]) or not 0 <= vox_offset < 2**62:
        raise IngestError("not_an_image", "the NIfTI header declares an impossible size")
    return NiftiHeader(tuple(int(n) for n in dims[:ndim]), int(datatype), int(vox_offset), single)


def _version(head: bytes) -> tuple[int, str]:
    for endian in ("<", ">"):
        if len(head) >= 348 and struct.unpack_from(endian + "i", head)[0] == 348:
            return 1, endian
        if len(head) >= 540 and struct.unpack_from(endian + "i", head)[0] == 540:
            return 2, endian
    raise IngestError("not_an_image", "the NIfTI header could not be read")


def check_nifti_header(header: NiftiHeader, limits: Limits, *, data_len: int | None) -> None:
    """Refuse, before any voxel is read, what the header alone shows to be unreadable or too large.

    data_len: the length of the whole (uncompressed) file when known; a single-file image shorter than
    its header declares is truncated (the case that made nibabel allocate gigabytes for a 1 KB file).
    """
    if header.datatype not in _SCALAR_ITEMSIZE:
        raise IngestError("not_an_image", "NIfTI data must be a scalar 3-D volume (no RGB/complex)")
    shape = header.shape + (1,) * (3 - len(header.shape))
    if any(n != 1 for n in shape[3:]):
        raise IngestError("not_an_image", "4-D NIfTI (time series or vectors) is not supported")
    x, y, z = shape[:3]
    limits.check_pixels(x * y * z)
    # Reorientation may bring any two axes into the slice plane: the largest pair must fit.
    largest = sorted((x, y, z))[1:]
    limits.check_slice(largest[0], largest[1])
    if not header.single_file:
        raise IngestError("not_an_image", "a NIfTI header without its voxel data (.hdr/.img pair)")
    if data_len is not None and data_len < header.file_bytes:
        raise IngestError("not_an_image", "the NIfTI voxel data is truncated")


def read_nifti(
    data: bytes, limits: Limits
) -> tuple[np.ndarray, tuple[float, float, float], list[list[float]]]:
    """Uncompressed NIfTI bytes -> (pixels (S, H, W), (row_mm, col_mm, slice_mm), affine (s, h, w) -> RAS).

    The header is checked with `check_nifti_header` first; every nibabel call is inside the guard that
    turns its failures into IngestError.
    """
    check_nifti_header(nifti_header(data[:HEADER_BYTES]), limits, data_len=len(data))
    try:
        canonical = nib.as_closest_canonical(_squeeze_to_3d(_load(data)))
        volume = np.asanyarray(canonical.dataobj)
        zooms = canonical.header.get_zooms()[:3]
    except (IngestError, MemoryError):
        raise
    except Exception:
        raise IngestError("not_an_image", "the NIfTI voxel data is truncated or unreadable") from None
    if volume.dtype.kind not in "biuf" or volume.ndim != 3:
        raise IngestError("not_an_image", "NIfTI data must be a scalar 3-D volume (no RGB/complex)")
    dx, dy, dz = (float(z) for z in zooms)
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
