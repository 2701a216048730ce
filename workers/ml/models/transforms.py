"""Image preparation for the network, padding to the network divisor, and training augmentation.

Contracts:
- `prepare_image(raw, modality)` maps a raw (H, W) or (H, W, 3|4) array to float32 (C, H, W), C = 1 for
  grayscale and 3 for RGB, finite values only. CT: HU clipped to [-1000, 1000] and scaled to [-1, 1].
  RGB: uint8 / 255 (uint16 / 65535; floats already in [0, 1] kept), alpha dropped. Anything else
  (MR, XR, US, ...): robust percentile scaling, 1st -> 0 and 99th -> 1, clipped to [0, 1].
- `prepare_context(volume, z, k, modality, step)` is 2.5D input: slice `z` of a raw (S, H, W[, 3]) array with
  its k // 2 neighbours on each side, `step` slices apart (clamped at the volume's ends), each prepared on
  its own and stacked as channels: float32 (k * C, H, W), the slice itself in the middle channel(s). k = 1 is
  `prepare_image`. `context_step` picks the step that puts neighbours a given distance in mm apart.
- `pad_to_multiple(arr, divisor)` pads the last two axes at the end (bottom/right) by edge replication,
  and returns the original (H, W) so `crop_to(arr, hw)` undoes it exactly.
- `train_transforms(patch_size, ...)` is a MONAI dictionary pipeline over {"image": (C, H, W),
  "label": (1, H, W)}; call `.set_random_state(seed)` on it for reproducible augmentation.
"""

from __future__ import annotations

import numpy as np
from monai.transforms import (
    Compose,
    RandAdjustContrastd,
    RandAffined,
    RandCropByPosNegLabeld,
    RandFlipd,
    RandGaussianNoised,
    RandRotate90d,
    RandScaleIntensityd,
    RandShiftIntensityd,
    RandSpatialCropd,
    SpatialPadd,
)

from workers.ml.models.preparation import CT_WINDOW, PERCENTILES, RGB_MODALITIES  # noqa: F401  (re-exported)


def is_rgb(raw: np.ndarray) -> bool:
    """A raw image is RGB when it has a trailing axis of 3 (RGB) or 4 (RGBA)."""
    return raw.ndim == 3 and raw.shape[-1] in (3, 4)


def prepare_image(raw: np.ndarray, modality: str) -> np.ndarray:
    """Raw (H, W) or (H, W, 3|4) -> float32 (C, H, W). NaN/inf become the image's finite minimum."""
    arr = np.asarray(raw)
    if is_rgb(arr):
        return _prepare_rgb(arr)
    if arr.ndim != 2:
        raise ValueError(f"expected (H, W) or (H, W, 3), got shape {arr.shape}")
    if modality.upper() in RGB_MODALITIES:
        raise ValueError(f"modality {modality} expects an (H, W, 3) image, got {arr.shape}")
    img = _finite(arr.astype(np.float32, copy=False))
    if modality.upper() == "CT":
        lo, hi = CT_WINDOW
        out = (np.clip(img, lo, hi) - lo) / (hi - lo) * 2.0 - 1.0
    else:
        out = _percentile_scale(img)
    return out.astype(np.float32, copy=False)[None]


def context_indices(z: int, n: int, k: int, step: int = 1) -> list[int]:
    """The slice indices of a k-slice context around `z` in a volume of `n` slices, `step` slices apart,
    clamped at the ends (k odd, 0 <= z < n): context_indices(0, 5, 3) == [0, 0, 1]."""
    if k < 1 or k % 2 == 0:
        raise ValueError(f"context must be an odd number of slices >= 1, got {k}")
    if not 0 <= z < n or step < 1:
        raise ValueError(f"slice {z} outside a volume of {n} slices, or step {step} < 1")
    return [min(max(z + d * step, 0), n - 1) for d in range(-(k // 2), k // 2 + 1)]


def context_step(slice_mm: float | None, context_mm: float | None) -> int:
    """Slices between neighbours so that they lie about `context_mm` apart in a volume whose slices are
    `slice_mm` apart (1 when either is unknown): the same physical context for thin and thick series."""
    if not slice_mm or not context_mm or slice_mm <= 0 or context_mm <= 0:
        return 1
    return max(1, round(context_mm / slice_mm))


def prepare_context(volume: np.ndarray, z: int, k: int, modality: str, step: int = 1) -> np.ndarray:
    """2.5D input: raw (S, H, W[, 3]) volume -> float32 (k * C, H, W) around slice `z` (see the module doc)."""
    return np.concatenate(
        [prepare_image(volume[i], modality) for i in context_indices(z, volume.shape[0], k, step)], axis=0
    )


def ensure_prepared(image: np.ndarray, modality: str, in_channels: int) -> np.ndarray:
    """Accept a prepared (C, H, W) image as is, prepare a raw one; check the channel count."""
    arr = np.asarray(image)
    # Prepared images are floating (C, H, W); raw RGB is integer (H, W, 3), raw grayscale is 2-D.
    if arr.ndim == 3 and arr.shape[0] == in_channels and np.issubdtype(arr.dtype, np.floating):
        out = arr.astype(np.float32, copy=False)
    else:
        out = prepare_image(arr, modality)
    if out.shape[0] != in_channels:
        raise ValueError(f"network expects {in_channels} channel(s), image has {out.shape[0]}")
    return out


def _finite(img: np.ndarray) -> np.ndarray:
    bad = ~np.isfinite(img)
    if not bad.any():
        return img
    fill = img[~bad].min() if (~bad).any() else 0.0
    return np.where(bad, fill, img)


def _percentile_scale(img: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(img, PERCENTILES)
    if hi <= lo:  # constant (or nearly) image: no contrast to scale
        return np.zeros_like(img)
    return np.clip((img - lo) / (hi - lo), 0.0, 1.0)


def _prepare_rgb(arr: np.ndarray) -> np.ndarray:
    rgb = arr[..., :3]
    if rgb.dtype == np.uint8:
        out = rgb.astype(np.float32) / 255.0
    elif rgb.dtype == np.uint16:
        out = rgb.astype(np.float32) / 65535.0
    else:
        out = np.clip(_finite(rgb.astype(np.float32)), 0.0, 1.0)
    return np.ascontiguousarray(out.transpose(2, 0, 1))


def padded_shape(hw: tuple[int, int], divisor: int) -> tuple[int, int]:
    h, w = hw
    return (-(-h // divisor) * divisor, -(-w // divisor) * divisor)


def pad_to_multiple(arr: np.ndarray, divisor: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Pad the last two axes at the end (edge mode) to multiples of `divisor`; return (padded, (H, W))."""
    h, w = arr.shape[-2:]
    ph, pw = padded_shape((h, w), divisor)
    if (ph, pw) == (h, w):
        return arr, (h, w)
    pads = [(0, 0)] * (arr.ndim - 2) + [(0, ph - h), (0, pw - w)]
    return np.pad(arr, pads, mode="edge"), (h, w)


def crop_to(arr: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Undo `pad_to_multiple`: keep the top-left (H, W) of the last two axes."""
    return arr[..., : hw[0], : hw[1]]


def train_transforms(
    patch_size: tuple[int, int],
    *,
    augment: bool = True,
    intensity: bool = True,
    centre_on_label: bool = False,
    strong: bool = False,
) -> Compose:
    """Pad to at least `patch_size`, crop exactly `patch_size` (centred on a random labelled pixel with
    `centre_on_label`, for images that have one; anywhere otherwise), then (if `augment`) flips, 90-degree rotations and (if
    `intensity`) small intensity scale/shift of the image only; `strong` adds a small affine (rotation,
    scale; labels nearest-neighbour), gamma and Gaussian noise.

    Labels move with the image through every spatial transform and are never interpolated.
    """
    keys = ["image", "label"]
    steps: list = [SpatialPadd(keys=keys, spatial_size=patch_size, mode="edge")]
    if strong and augment:  # before the crop: the affine then sees context instead of padding
        steps.append(
            RandAffined(
                keys=keys,
                prob=0.3,
                rotate_range=(0.26,),
                scale_range=((-0.15, 0.25), (-0.15, 0.25)),
                mode=("bilinear", "nearest"),
                padding_mode="border",
            )
        )
    steps.append(_crop(keys, patch_size, centre_on_label))
    if augment:
        steps += [
            RandFlipd(keys=keys, prob=0.5, spatial_axis=0),
            RandFlipd(keys=keys, prob=0.5, spatial_axis=1),
        ]
        if patch_size[0] == patch_size[1]:  # a quarter turn of a non-square patch would change its shape
            steps.append(RandRotate90d(keys=keys, prob=0.5, max_k=3, spatial_axes=(0, 1)))
        if intensity:
            steps += [
                RandScaleIntensityd(keys="image", factors=0.1, prob=0.5),
                RandShiftIntensityd(keys="image", offsets=0.1, prob=0.5),
            ]
        if strong:
            steps += [
                RandAdjustContrastd(keys="image", prob=0.3, gamma=(0.7, 1.5)),
                RandGaussianNoised(keys="image", prob=0.15, std=0.05),
            ]
    return Compose(steps)


def _crop(keys: list[str], patch_size: tuple[int, int], centre_on_label: bool):
    if not centre_on_label:
        return RandSpatialCropd(keys=keys, roi_size=patch_size, random_size=False)
    return RandCropByPosNegLabeld(
        keys=keys,
        label_key="label",
        spatial_size=patch_size,
        pos=1.0,
        neg=0.0,
        num_samples=1,
        allow_smaller=True,
    )
