"""A dataset fingerprint and the training plan it implies (nnU-Net's idea, for 2D slices on a CPU budget).

The fingerprint is what the images say about themselves: how many, their in-plane size, the share of
pixels and of images that hold a label. The plan turns it into the patch size, the batch size and the depth
of the network: a patch that covers the whole slice up to `MAX_PATCH` (larger slices: random patches in
training, the whole slice at inference) (context decides what a structure is:
deep grey nuclei look like cortex to a small window), a network deep enough that its receptive field spans
the patch, and a batch that keeps pixels per step near the budget of a 128 x 128 x 8 batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

PATCH_MULTIPLE = 32
MIN_PATCH, MAX_PATCH = 64, 192
# Below 4 samples a step training was unstable (MNI152 at 256 px x 2: test Dice 0.43, best epoch 1).
MIN_BATCH, MAX_BATCH = 4, 16
PIXELS_PER_STEP = 8 * 128 * 128
BASE_CHANNELS = (16, 32, 64, 128, 256)


@dataclass(frozen=True)
class Fingerprint:
    images: int
    median_size: tuple[int, int]  # (H, W), median over the images
    max_size: tuple[int, int]
    labelled_pixel_share: float  # over every pixel of the labelled images
    labelled_image_share: float  # images holding any labelled pixel

    def to_dict(self) -> dict:
        d = asdict(self)
        d["median_size"], d["max_size"] = list(self.median_size), list(self.max_size)
        return d


def fingerprint(shapes: Sequence[tuple[int, ...]], masks: Sequence[np.ndarray] = ()) -> Fingerprint:
    """From the (..., H, W) shapes of the images and the label maps of the labelled ones (may be empty)."""
    if not shapes:
        raise ValueError("no images to fingerprint")
    hw = np.array([s[-2:] for s in shapes])
    fg = [float(np.count_nonzero(m)) / max(m.size, 1) for m in masks]
    return Fingerprint(
        images=len(shapes),
        median_size=(int(np.median(hw[:, 0])), int(np.median(hw[:, 1]))),
        max_size=(int(hw[:, 0].max()), int(hw[:, 1].max())),
        labelled_pixel_share=float(np.mean(fg)) if fg else 0.0,
        labelled_image_share=float(np.mean([f > 0 for f in fg])) if fg else 0.0,
    )


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def plan(fp: Fingerprint) -> dict:
    """{"patch_size", "batch_size", "channels"} for this fingerprint (see the module docstring)."""
    side = _round_up(max(fp.median_size), PATCH_MULTIPLE)
    patch = int(min(MAX_PATCH, max(MIN_PATCH, side)))
    levels = 5 if patch >= 160 else 4  # receptive field of the deepest level ~ the patch
    batch = int(max(MIN_BATCH, min(MAX_BATCH, PIXELS_PER_STEP // (patch * patch))))
    return {"patch_size": patch, "batch_size": batch, "channels": list(BASE_CHANNELS[:levels])}
