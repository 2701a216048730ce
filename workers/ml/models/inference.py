"""Batched softmax inference with padding, sliding windows for large images and flip TTA.

Contracts:
- Inputs are prepared images, float32 (C, H, W) (see `workers.ml.models.transforms.prepare_image`); sizes may
  differ between images. Outputs come back in input order, cropped to each image's own (H, W).
- The model is switched to eval mode (and left there) and run under `torch.inference_mode()`.
- Images of the same padded size are batched together, `batch_size` at a time.
- With ``roi_size`` set, an image larger than it in either axis goes through MONAI's
  `sliding_window_inference` (Gaussian blending of softmax probabilities, 25% overlap); smaller ones
  take the plain path.
- ``tta=True`` averages the softmax of the identity, a horizontal and a vertical flip (each flipped back).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from monai.networks.nets import UNet
from torch import nn

from workers.ml.models.transforms import crop_to, pad_to_multiple, padded_shape

SW_OVERLAP = 0.25


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a parameter-less module)."""
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def network_divisor(model: nn.Module) -> int:
    """The multiple the input sides must be: `model.size_divisor` when set (an imported bundle's network,
    measured at import), else the product of the strides of the first (possibly wrapped) MONAI UNet; 1 for
    other models."""
    given = getattr(model, "size_divisor", None)
    if isinstance(given, int) and given >= 1:
        return given
    for mod in model.modules():
        if isinstance(mod, UNet):
            return int(np.prod(mod.strides))
    return 1


def softmax_predictor(model: nn.Module, *, tta: bool = False) -> Callable[[torch.Tensor], torch.Tensor]:
    """x (B, C, H, W) -> softmax (B, K, H, W); with `tta`, the mean over identity + two flips."""

    def predict(x: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(model(x), dim=1)
        if not tta:
            return probs
        for dim in (3, 2):  # horizontal (W), then vertical (H)
            probs = probs + torch.softmax(model(x.flip(dim)), dim=1).flip(dim)
        return probs / 3.0

    return predict


def _needs_window(hw: tuple[int, int], roi_size: tuple[int, int] | None) -> bool:
    return roi_size is not None and (hw[0] > roi_size[0] or hw[1] > roi_size[1])


def group_by_shape(images: Sequence[np.ndarray], batch_size: int) -> list[list[int]]:
    """Indices grouped by (H, W), then cut into batches; order within a group is input order."""
    by_shape: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for i, img in enumerate(images):
        by_shape[tuple(img.shape)].append(i)
    return [idx[s : s + batch_size] for idx in by_shape.values() for s in range(0, len(idx), batch_size)]


def predict_proba(
    model: nn.Module,
    images: Sequence[np.ndarray],
    *,
    batch_size: int = 8,
    tta: bool = False,
    roi_size: tuple[int, int] | None = None,
    device: torch.device | str | None = None,
) -> list[np.ndarray]:
    """Softmax probabilities (K, H, W) float32 per image, in input order."""
    if device is not None:
        model.to(device)
    dev = model_device(model)
    model.eval()
    divisor = network_divisor(model)
    predictor = softmax_predictor(model, tta=tta)
    roi = padded_shape(roi_size, divisor) if roi_size is not None else None  # windows must fit the net
    out: list[np.ndarray | None] = [None] * len(images)
    with torch.inference_mode():
        for idx in group_by_shape(images, batch_size):
            hw = images[idx[0]].shape[-2:]
            padded = [pad_to_multiple(np.asarray(images[i], dtype=np.float32), divisor)[0] for i in idx]
            x = torch.from_numpy(np.stack(padded)).to(dev)
            if roi is not None and _needs_window(hw, roi):
                probs = sliding_window_inference(
                    x, roi, sw_batch_size=batch_size, predictor=predictor, overlap=SW_OVERLAP, mode="gaussian"
                )
            else:
                probs = predictor(x)
            arr = crop_to(torch.as_tensor(probs).float().cpu().numpy(), hw)
            for j, i in enumerate(idx):
                out[i] = np.ascontiguousarray(arr[j])
    return out  # type: ignore[return-value]


def predict_labels(
    model: nn.Module,
    images: Sequence[np.ndarray],
    *,
    batch_size: int = 8,
    tta: bool = False,
    roi_size: tuple[int, int] | None = None,
    device: torch.device | str | None = None,
) -> list[np.ndarray]:
    """Arg-max label map (H, W) uint8 per image."""
    probs = predict_proba(model, images, batch_size=batch_size, tta=tta, roi_size=roi_size, device=device)
    return [p.argmax(axis=0).astype(np.uint8) for p in probs]
