"""Surface-distance agreement metrics (HD95, ASSD, surface Dice) on binary masks, 2D or 3D.

Distances are in millimetres: every distance transform runs with ``sampling=spacing``.

Surface voxels are the mask voxels removed by one face-connected erosion (a one-voxel-thick inner
boundary); the image edge counts as background, so a mask touching the edge has a surface there.

Empty-mask conventions (so JSON and statistics never meet NaN or inf):

* both masks empty: HD95 = ASSD = 0.0 and surface Dice = 1.0 (perfect agreement on "nothing here");
* exactly one empty: HD95 = ASSD = the image diagonal in mm, ``sqrt(sum((n_i * s_i) ** 2))`` over the
  full image shape ``n`` and spacing ``s``, which is larger than any distance two voxels of the image can
  have, and surface Dice = 0.0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

SpacingLike = Sequence[float] | None


def as_spacing(spacing: SpacingLike, ndim: int) -> tuple[float, ...]:
    """Spacing in mm per axis; None means 1 mm isotropic. Raises ValueError on a wrong length or value."""
    if spacing is None:
        return (1.0,) * ndim
    sp = tuple(float(s) for s in spacing)
    if len(sp) != ndim or not all(np.isfinite(s) and s > 0 for s in sp):
        raise ValueError(f"spacing must be {ndim} positive finite numbers, got {spacing!r}")
    return sp


def binary_pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both masks as bool (non-zero = foreground). Raises ValueError unless same shape, 2D or 3D."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"mask shapes differ: {a.shape} vs {b.shape}")
    if a.ndim not in (2, 3):
        raise ValueError(f"masks must be 2D or 3D, got {a.ndim}D")
    return a != 0, b != 0


def image_diagonal_mm(shape: Sequence[int], spacing: Sequence[float]) -> float:
    """The finite stand-in distance used when exactly one mask is empty (see module docstring)."""
    return float(np.sqrt(sum((n * s) ** 2 for n, s in zip(shape, spacing, strict=True))))


def surface(mask: np.ndarray) -> np.ndarray:
    """Boolean surface (inner boundary) of a boolean mask: mask minus its face-connected erosion."""
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def crop_box(masks: Sequence[np.ndarray]) -> tuple[slice, ...] | None:
    """Bounding box of the union of `masks`, grown by one voxel and clipped to the image; None if all empty.

    Cropping is exact for surface distances: every surface voxel of every mask lies inside the box,
    and the one-voxel margin keeps erosion at the box edge identical to erosion of the full image.
    """
    union = np.logical_or.reduce([np.asarray(m) for m in masks])
    if not union.any():
        return None
    box = []
    for axis in range(union.ndim):
        other = tuple(i for i in range(union.ndim) if i != axis)
        idx = np.flatnonzero(union.any(axis=other))
        box.append(slice(max(int(idx[0]) - 1, 0), min(int(idx[-1]) + 2, union.shape[axis])))
    return tuple(box)


@dataclass(frozen=True)
class SurfaceField:
    """One mask's surface and the distance (mm) from every voxel to that surface, on a shared crop.

    `distance` is None when the mask is empty. Build once per mask and reuse across pairs: this is
    what keeps a multi-reader case fast (one distance transform per mask instead of two per pair).
    """

    surface: np.ndarray
    distance: np.ndarray | None


def surface_field(mask: np.ndarray, spacing: Sequence[float], box: tuple[slice, ...] | None) -> SurfaceField:
    """Field of the boolean `mask` cropped to `box` (from `crop_box` over every mask it will meet)."""
    cropped = mask[box] if box is not None else mask
    surf = surface(cropped)
    if not surf.any():
        return SurfaceField(surface=surf, distance=None)
    return SurfaceField(surface=surf, distance=ndimage.distance_transform_edt(~surf, sampling=spacing))


@dataclass(frozen=True)
class SurfaceDistances:
    """Directed surface distances in mm between masks A and B, and the metrics derived from them.

    `a_to_b[i]` is the distance from the i-th surface voxel of A to the nearest surface voxel of B.
    `fallback` is the distance reported when exactly one mask is empty (the image diagonal in mm).
    """

    a_to_b: np.ndarray
    b_to_a: np.ndarray
    empty_a: bool
    empty_b: bool
    fallback: float

    def _one_empty(self) -> bool:
        return self.empty_a != self.empty_b

    def hd95(self) -> float:
        """Symmetric HD95: the larger of the two directed 95th percentiles (linear interpolation)."""
        if self.empty_a and self.empty_b:
            return 0.0
        if self._one_empty():
            return self.fallback
        return float(max(np.percentile(self.a_to_b, 95), np.percentile(self.b_to_a, 95)))

    def assd(self) -> float:
        """Average symmetric surface distance: mean over the surface voxels of both masks together."""
        if self.empty_a and self.empty_b:
            return 0.0
        if self._one_empty():
            return self.fallback
        total = float(self.a_to_b.sum() + self.b_to_a.sum())
        return total / (self.a_to_b.size + self.b_to_a.size)

    def surface_dice(self, tolerance_mm: float) -> float:
        """Share of both surfaces lying within `tolerance_mm` of the other (voxel counts, not areas)."""
        if tolerance_mm < 0:
            raise ValueError("tolerance_mm must be >= 0")
        if self.empty_a and self.empty_b:
            return 1.0
        if self._one_empty():
            return 0.0
        close = int((self.a_to_b <= tolerance_mm).sum() + (self.b_to_a <= tolerance_mm).sum())
        return close / (self.a_to_b.size + self.b_to_a.size)


def distances_from_fields(
    fa: SurfaceField, fb: SurfaceField, shape: Sequence[int], spacing: Sequence[float]
) -> SurfaceDistances:
    """Directed distances between two masks whose fields were built on the same crop."""
    empty = np.zeros(0, dtype=np.float64)
    a_to_b = fb.distance[fa.surface] if fb.distance is not None else empty
    b_to_a = fa.distance[fb.surface] if fa.distance is not None else empty
    return SurfaceDistances(
        a_to_b=np.asarray(a_to_b, dtype=np.float64),
        b_to_a=np.asarray(b_to_a, dtype=np.float64),
        empty_a=fa.distance is None,
        empty_b=fb.distance is None,
        fallback=image_diagonal_mm(shape, spacing),
    )


def surface_distances(a: np.ndarray, b: np.ndarray, spacing: SpacingLike = None) -> SurfaceDistances:
    """Directed surface distances (mm) between binary masks `a` and `b` (non-zero = foreground)."""
    a, b = binary_pair(a, b)
    sp = as_spacing(spacing, a.ndim)
    box = crop_box([a, b])
    fa, fb = surface_field(a, sp, box), surface_field(b, sp, box)
    return distances_from_fields(fa, fb, a.shape, sp)


def hausdorff95(a: np.ndarray, b: np.ndarray, spacing: SpacingLike = None) -> float:
    """Symmetric 95th-percentile Hausdorff distance in mm; empty-mask conventions in the module docstring."""
    return surface_distances(a, b, spacing).hd95()


def assd(a: np.ndarray, b: np.ndarray, spacing: SpacingLike = None) -> float:
    """Average symmetric surface distance in mm; empty-mask conventions in the module docstring."""
    return surface_distances(a, b, spacing).assd()


def surface_dice(
    a: np.ndarray, b: np.ndarray, spacing: SpacingLike = None, tolerance_mm: float = 1.0
) -> float:
    """Normalised surface Dice (Nikolov et al. 2021) at `tolerance_mm`, counting surface voxels.

    Both empty -> 1.0, exactly one empty -> 0.0.
    """
    return surface_distances(a, b, spacing).surface_dice(tolerance_mm)
