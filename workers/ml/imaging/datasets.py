"""Real sample data that ships inside installed packages (no download at run time).

Each loader returns a `LabelledVolume` in RAS+ orientation (nibabel canonical), axes (X, Y, Z).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class LabelledVolume:
    name: str
    image: np.ndarray  # float32 (X, Y, Z)
    labels: np.ndarray  # uint8 (X, Y, Z), 0 = background
    spacing: tuple[float, float, float]
    affine: np.ndarray  # 4x4 voxel -> RAS mm
    label_names: dict[int, str]
    modality: str


def mni152_tissue() -> LabelledVolume:
    """MNI152 2009 T1 template (1 mm) with grey matter = 1 and white matter = 2 (nilearn, bundled).

    The GM and WM masks are automatic (152-subject average); where they overlap WM wins, as the
    WM mask is the stricter of the two on this template.
    """
    import nibabel as nib
    from nilearn import datasets

    t1 = nib.as_closest_canonical(datasets.load_mni152_template(resolution=1))
    gm = nib.as_closest_canonical(datasets.load_mni152_gm_mask(resolution=1))
    wm = nib.as_closest_canonical(datasets.load_mni152_wm_mask(resolution=1))
    labels = np.zeros(t1.shape, dtype=np.uint8)
    labels[np.asarray(gm.dataobj) > 0] = 1
    labels[np.asarray(wm.dataobj) > 0] = 2
    zooms = tuple(float(z) for z in t1.header.get_zooms()[:3])
    return LabelledVolume(
        name="mni152_tissue",
        image=np.asarray(t1.dataobj, dtype=np.float32),
        labels=labels,
        spacing=zooms,  # type: ignore[arg-type]
        affine=np.asarray(t1.affine, dtype=np.float64),
        label_names={1: "grey matter", 2: "white matter"},
        modality="MR",
    )


# --- data fetched by scripts/fetch_sample_data.py ------------------------------------------------------

_FETCH_HINT = "run `python scripts/fetch_sample_data.py` (an install step) to put the sample data there"
_MRICRON = ("mricron", "usr", "share", "mricron", "templates")
_TOTALSEG_REF = ("totalsegmentator", "tests", "reference_files")
# AAL ids (aal.nii.txt) of the hand-traced deep grey structures, left and right.
AAL_DEEP_GREY: dict[str, tuple[int, int]] = {
    "hippocampus": (37, 38),
    "amygdala": (41, 42),
    "caudate": (71, 72),
    "putamen": (73, 74),
    "pallidum": (75, 76),
    "thalamus": (77, 78),
}
# TotalSegmentator v2 "total" task ids (totalsegmentator/map_to_binary.py, class_map["total"]).
TOTALSEG_ORGANS: dict[str, tuple[int, ...]] = {
    "liver": (5,),
    "spleen": (1,),
    "kidney": (2, 3),  # kidney_right, kidney_left: merged, a 2D slice rarely needs the side
}
SLICE_AXES = ("axial", "coronal", "sagittal")


@dataclass(frozen=True)
class LabelledImage:
    """A single 2D image with a label map; `instances` keeps the instance ids when the source has them."""

    name: str
    image: np.ndarray  # float32 (H, W)
    labels: np.ndarray  # uint8 (H, W), 0 = background
    label_names: dict[int, str]
    modality: str
    instances: np.ndarray | None = None  # int32 (H, W), 0 = background


@dataclass(frozen=True)
class VolumeSlice:
    """One resampled 2D slice: `image` float32 (size, size), `mask` uint8 (size, size).

    `axis` and `index` locate the slice in the source volume (RAS canonical voxel index along that axis),
    so callers can split by position and keep adjacent slices out of different splits.
    """

    image: np.ndarray
    mask: np.ndarray
    axis: str
    index: int
    n_along_axis: int

    @property
    def position(self) -> float:
        """Slice position along its axis as a fraction in [0, 1)."""
        return self.index / self.n_along_axis


def data_dir() -> Path:
    """Root of the fetched sample data: ``$HITL_DATA_DIR`` if set, else ``<repo>/var/data``."""
    env = os.environ.get("HITL_DATA_DIR")
    if env:
        return Path(env).expanduser().resolve()
    return Path(__file__).resolve().parents[3] / "var" / "data"


def _require(path: Path) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: {_FETCH_HINT}")
    return path


def _load_canonical(path: Path) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    import nibabel as nib

    img = nib.as_closest_canonical(nib.load(str(_require(path))))
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    return np.asarray(img.dataobj), np.asarray(img.affine, dtype=np.float64), zooms  # type: ignore[return-value]


def _merge_labels(raw: np.ndarray, groups: dict[str, tuple[int, ...]]) -> tuple[np.ndarray, dict[int, str]]:
    """Map groups of source ids to consecutive classes 1..len(groups); everything else becomes 0."""
    labels = np.zeros(raw.shape, dtype=np.uint8)
    names: dict[int, str] = {}
    for cls, (name, ids) in enumerate(groups.items(), start=1):
        labels[np.isin(raw, ids)] = cls
        names[cls] = name
    return labels, names


def colin27_deep_grey(per_structure: bool = False) -> LabelledVolume:
    """Colin27 T1 (``ch2.nii.gz``, 181x217x181, 1 mm) with the hand-traced AAL deep grey structures.

    Default: ONE class "deep grey" (hippocampus, amygdala, caudate, putamen, pallidum, thalamus, both
    sides). At the 64-96 px slice sizes the CPU simulation uses, pallidum and amygdala shrink to a few
    pixels; the merged class stays learnable from tens of slices, which is what an active-learning curve
    needs. ``per_structure=True`` gives 6 classes (left and right merged per structure).
    """
    root = data_dir().joinpath(*_MRICRON)
    image, affine, zooms = _load_canonical(root / "ch2.nii.gz")
    aal, aal_affine, _ = _load_canonical(root / "aal.nii.gz")
    if aal.shape != image.shape or not np.allclose(aal_affine, affine):
        raise ValueError("aal.nii.gz is not on the ch2.nii.gz grid")
    if per_structure:
        labels, names = _merge_labels(aal, dict(AAL_DEEP_GREY))
    else:
        all_ids = tuple(i for pair in AAL_DEEP_GREY.values() for i in pair)
        labels, names = _merge_labels(aal, {"deep grey": all_ids})
    return LabelledVolume(
        name="colin27_deep_grey",
        image=image.astype(np.float32),
        labels=labels,
        spacing=zooms,
        affine=affine,
        label_names=names,
        modality="MR",
    )


def totalseg_ct() -> LabelledVolume:
    """TotalSegmentator's small example CT (122x101x30, 3 mm, HU) with liver=1, spleen=2, kidney=3.

    The organ masks are TotalSegmentator model output shipped as the package's test reference, not expert
    tracing; ids follow ``class_map["total"]`` in the sdist's ``totalsegmentator/map_to_binary.py``.
    """
    root = data_dir().joinpath(*_TOTALSEG_REF)
    image, affine, zooms = _load_canonical(root / "example_ct_sm.nii.gz")
    seg, _, _ = _load_canonical(root / "example_seg.nii.gz")
    if seg.shape != image.shape:
        raise ValueError("example_seg.nii.gz does not match example_ct_sm.nii.gz")
    labels, names = _merge_labels(seg, dict(TOTALSEG_ORGANS))
    return LabelledVolume(
        name="totalseg_ct",
        image=image.astype(np.float32),
        labels=labels,
        spacing=zooms,
        affine=affine,
        label_names=names,
        modality="CT",
    )


def stardist_nuclei() -> LabelledImage:
    """stardist's 2D fluorescence image (512x512, Data Science Bowl 2018) with nuclei = 1 (binary)."""
    import tifffile

    root = data_dir() / "stardist"
    image = tifffile.imread(_require(root / "img2d.tif"))
    instances = tifffile.imread(_require(root / "mask2d.tif")).astype(np.int32)
    return LabelledImage(
        name="stardist_nuclei",
        image=image.astype(np.float32),
        labels=(instances > 0).astype(np.uint8),
        label_names={1: "nucleus"},
        modality="microscopy",
        instances=instances,
    )


def _take(volume: np.ndarray, axis: str, index: int) -> np.ndarray:
    """A 2D slice of an RAS (X, Y, Z) array, anterior/superior up, patient left on image left."""
    if axis == "axial":
        plane = volume[:, :, index]  # (X, Y)
    elif axis == "coronal":
        plane = volume[:, index, :]  # (X, Z)
    elif axis == "sagittal":
        plane = volume[index, :, :]  # (Y, Z)
    else:
        raise ValueError(f"unknown axis {axis!r}; expected one of {SLICE_AXES}")
    return np.rot90(plane)


def _plane_spacing(spacing: tuple[float, float, float], axis: str) -> tuple[float, float]:
    """(row, col) spacing in mm of a slice from `_take` (rot90 swaps the plane's two axes)."""
    sx, sy, sz = spacing
    return {"axial": (sy, sx), "coronal": (sz, sx), "sagittal": (sz, sy)}[axis]


def _fit_square(
    plane: np.ndarray, pixel_mm: tuple[float, float], size: int, order: int, fill: float
) -> np.ndarray:
    """Resample to isotropic pixels so the longer physical side spans `size`, then centre-pad to square."""
    from scipy import ndimage

    extent = max(plane.shape[0] * pixel_mm[0], plane.shape[1] * pixel_mm[1])
    out_mm = extent / size
    zoom = (pixel_mm[0] / out_mm, pixel_mm[1] / out_mm)
    resized = ndimage.zoom(plane, zoom, order=order, mode="nearest", grid_mode=True)
    resized = resized[:size, :size]
    canvas = np.full((size, size), fill, dtype=resized.dtype)
    r0, c0 = (size - resized.shape[0]) // 2, (size - resized.shape[1]) // 2
    canvas[r0 : r0 + resized.shape[0], c0 : c0 + resized.shape[1]] = resized
    return canvas


def slices(
    volume: LabelledVolume,
    axes: tuple[str, ...] = SLICE_AXES,
    size: int = 64,
    min_foreground: float = 0.0,
    step: int = 1,
    min_content: float = 0.05,
) -> list[VolumeSlice]:
    """2D slices of `volume` along `axes`, each resampled to (size, size) isotropic pixels.

    A slice is kept when its mask has at least `min_foreground` (fraction of pixels) labelled and at least
    `min_content` of its pixels are above the volume's minimum (drops slices that are all air). With the
    default ``min_foreground=0`` slices without any structure stay in, as in a real unlabelled pool.
    Every `step`-th slice along each axis is considered. Images keep their raw intensities (float32);
    masks are resampled nearest-neighbour, so class ids are preserved.
    """
    if step < 1 or size < 8:
        raise ValueError("step must be >= 1 and size >= 8")
    unknown = set(axes) - set(SLICE_AXES)
    if unknown:
        raise ValueError(f"unknown axis {sorted(unknown)}; expected some of {SLICE_AXES}")
    background = float(volume.image.min())
    out: list[VolumeSlice] = []
    for axis in axes:
        n = volume.image.shape[{"sagittal": 0, "coronal": 1, "axial": 2}[axis]]
        pixel_mm = _plane_spacing(volume.spacing, axis)
        for index in range(0, n, step):
            img2d = _take(volume.image, axis, index)
            mask2d = _take(volume.labels, axis, index)
            if (img2d > background).mean() < min_content or (mask2d > 0).mean() < min_foreground:
                continue
            out.append(
                VolumeSlice(
                    image=_fit_square(img2d.astype(np.float32), pixel_mm, size, 1, background),
                    mask=_fit_square(mask2d.astype(np.uint8), pixel_mm, size, 0, 0).astype(np.uint8),
                    axis=axis,
                    index=index,
                    n_along_axis=n,
                )
            )
    return out
