"""Simulation tasks: a labelled volume cut into 2D slices, split by slice position.

Split rule (no leakage between neighbouring slices): along each axis the kept slices are cut into
`n_blocks` contiguous blocks by position; blocks are assigned to pool / validation / test by a fixed
pattern, and every slice whose neighbour (in index order on the same axis) lies in another split is
dropped, so a test slice is never next to a pool or validation slice. Slices of different orientations
still cross each other along one line of voxels; that is inherent to using three orientations and is
the only overlap.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from workers.ml.imaging import datasets
from workers.ml.imaging.datasets import VolumeSlice

POOL, VAL, TEST = "pool", "val", "test"
# 10 blocks along each axis: 7 pool, 1 validation, 2 test, interleaved so that each split sees the
# start, middle and end of the volume (deep grey only appears in the central blocks).
BLOCK_PATTERN = (POOL, POOL, TEST, POOL, VAL, POOL, POOL, TEST, POOL, POOL)


@dataclass(frozen=True)
class TaskSpec:
    """How to turn a dataset into 2D slices; `step` thins slices along each axis."""

    dataset: str
    size: int = 64
    step: int = 1
    axes: tuple[str, ...] = datasets.SLICE_AXES
    min_content: float = 0.05
    # Keep only slices within the labels' bounding box +- this many voxels along each axis (None: all).
    # Why: a pool that is 70% structure-free slices made the 8-channel net collapse to background in
    # the step budget (validation Dice 0.00 after 360 steps on all colin27 slices, 0.45 on the slab).
    slab_margin: int | None = None


@dataclass(frozen=True, eq=False)
class SimTask:
    """Prepared slices and a fixed split. `images` float32 (N, 1, S, S); `masks` uint8 (N, S, S)."""

    name: str
    images: np.ndarray
    masks: np.ndarray
    modality: str
    label_names: dict[int, str]
    axis: tuple[str, ...]
    index: np.ndarray
    pool: np.ndarray  # indices into images
    val: np.ndarray
    test: np.ndarray
    dropped: int = 0
    meta: dict[str, object] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.label_names) + 1


LOADERS = {
    "colin27_deep_grey": datasets.colin27_deep_grey,
    "totalseg_ct": datasets.totalseg_ct,
    "mni152_tissue": datasets.mni152_tissue,
}


def assign_splits(items: list[VolumeSlice], n_blocks: int = len(BLOCK_PATTERN)) -> list[str | None]:
    """Split label per slice (None = dropped as a boundary slice). Pure function of axis and index."""
    pattern = [BLOCK_PATTERN[i % len(BLOCK_PATTERN)] for i in range(n_blocks)]
    labels: list[str | None] = [None] * len(items)
    for axis in {s.axis for s in items}:
        order = sorted((i for i, s in enumerate(items) if s.axis == axis), key=lambda i: items[i].index)
        lo, hi = items[order[0]].index, items[order[-1]].index + 1
        raw = [pattern[min(n_blocks - 1, (items[i].index - lo) * n_blocks // (hi - lo))] for i in order]
        for k, i in enumerate(order):
            neighbours = raw[max(0, k - 1) : k + 2]
            labels[i] = raw[k] if all(r == raw[k] for r in neighbours) else None
    return labels


def in_slab(items: list[VolumeSlice], labels: np.ndarray, margin: int) -> list[VolumeSlice]:
    """Slices whose index lies within the labelled bounding box +- `margin` along their own axis."""
    nonzero = np.nonzero(labels)
    axis_dim = {"sagittal": 0, "coronal": 1, "axial": 2}
    bounds = {
        a: (int(nonzero[d].min()) - margin, int(nonzero[d].max()) + margin) for a, d in axis_dim.items()
    }
    return [s for s in items if bounds[s.axis][0] <= s.index <= bounds[s.axis][1]]


def build_task(spec: TaskSpec) -> SimTask:
    """Load the dataset, slice it, prepare images for the network and split by position."""
    from workers.ml.models.transforms import prepare_image

    if spec.dataset not in LOADERS:
        raise ValueError(f"unknown dataset {spec.dataset!r}; expected one of {sorted(LOADERS)}")
    volume = LOADERS[spec.dataset]()
    items = datasets.slices(
        volume, axes=spec.axes, size=spec.size, step=spec.step, min_content=spec.min_content
    )
    if spec.slab_margin is not None:
        items = in_slab(items, volume.labels, spec.slab_margin)
    split = assign_splits(items)
    keep = [i for i, s in enumerate(split) if s is not None]
    images = np.stack([prepare_image(items[i].image, volume.modality) for i in keep]).astype(np.float32)
    if images.ndim == 3:
        images = images[:, None]
    masks = np.stack([items[i].mask for i in keep]).astype(np.uint8)
    kept_split = np.asarray([split[i] for i in keep])
    for name in (POOL, VAL, TEST):
        if not (kept_split == name).any():
            raise ValueError(f"{spec}: no {name} slices left after the positional split; use a smaller step")
    return SimTask(
        name=spec.dataset,
        images=images,
        masks=masks,
        modality=volume.modality,
        label_names=dict(volume.label_names),
        axis=tuple(items[i].axis for i in keep),
        index=np.asarray([items[i].index for i in keep]),
        pool=np.flatnonzero(kept_split == POOL),
        val=np.flatnonzero(kept_split == VAL),
        test=np.flatnonzero(kept_split == TEST),
        dropped=len(items) - len(keep),
    )
