"""Shared machinery for the explanation methods: the target score, model-state guard, padding, timing.

The score every gradient/perturbation method explains is Seg-Grad-CAM's (Vinogradova et al. 2020):

    F(x) = sum_p w_p * logits(x)[target_class, p],   w = region mask (sum) or region mask / |region| (mean)

where the region is fixed once from the clean image (the predicted region of the target class by
default), so that F is one fixed function of the input: integrated gradients' completeness and
occlusion's "drop in score" are only meaningful for a fixed F.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

REGION_KINDS = ("predicted", "image", "mask")
REDUCTIONS = ("mean", "sum")


class RegionScore(nn.Module):
    """Wraps a segmentation net (logits (B, K, H, W)) into a scorer (B, 1) that GradCAM/occlusion accept."""

    def __init__(self, net: nn.Module, target_class: int, weights: torch.Tensor) -> None:
        super().__init__()
        self.net = net
        self.target_class = target_class
        self.weights = weights  # (1, 1, H, W), same device as net; not a buffer: not part of any state
        self.eval()  # a fresh Module is in train mode; MONAI's eval_mode would otherwise re-enable it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.net(x)
        t = self.target_class
        return (logits[:, t : t + 1] * self.weights).sum(dim=(2, 3))

    def zero_grad(self, set_to_none: bool = True) -> None:
        """No-op on purpose: MONAI's GradCAM calls it, and clearing would erase the caller's own .grad
        (e.g. mid-training). The net's parameters are frozen while explaining, so nothing accumulates."""


@contextmanager
def frozen_model(model: nn.Module) -> Iterator[None]:
    """Eval mode and frozen parameters while explaining; every module's mode and every flag restored after.

    Freezing means backward computes only input/activation gradients (cheaper) and never touches the
    parameters' .grad.
    """
    modes = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        model.eval()
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for m, mode in modes:
            m.training = mode
        for p, flag in flags:
            p.requires_grad_(flag)


def model_device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def model_divisor(model: nn.Module) -> int:
    """H and W must be multiples of this (MONAI UNet: product of its strides; other models: 1)."""
    strides = getattr(model, "strides", None)
    if not strides:
        return 1
    return int(np.prod([int(np.max(s)) for s in strides]))


def pad_to_multiple(x: torch.Tensor, divisor: int) -> torch.Tensor:
    """Pad (B, C, H, W) at the bottom/right by edge replication; explanations crop back to (H, W)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % divisor, (-w) % divisor
    if ph == 0 and pw == 0:
        return x
    return F.pad(x, (0, pw, 0, ph), mode="replicate")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Context:
    """What every method gets: the frozen model, the padded input, the fixed target score."""

    model: nn.Module
    x: torch.Tensor  # (1, C, Hp, Wp) on the model's device, padded
    height: int  # original image size, for cropping maps back
    width: int
    target_class: int
    logits: torch.Tensor  # (1, K, Hp, Wp) of the clean input, no grad
    score: RegionScore
    forward_seconds: float  # one warm forward pass of the model on x
    # Set for the methods in GRAPH_METHODS: x as a leaf that requires grad, and the logits of the clean
    # forward with its autograd graph, so a gradient method needs no second forward pass.
    x_leaf: torch.Tensor | None = None
    graph_logits: torch.Tensor | None = None

    def crop(self, m: torch.Tensor | np.ndarray) -> np.ndarray:
        """(..., Hp, Wp) -> float64 numpy (H, W) of the original image."""
        a = m.detach().float().cpu().numpy() if isinstance(m, torch.Tensor) else np.asarray(m)
        return np.asarray(a.reshape(a.shape[-2:])[: self.height, : self.width], dtype=np.float64)


def predicted_region(logits: torch.Tensor, target_class: int) -> torch.Tensor:
    """(K, H, W) logits -> (H, W) bool: where argmax over K is `target_class` (first maximum wins, as in
    torch.argmax). Built from K - 1 comparisons: torch's argmax over the class axis is ~100x slower on CPU."""
    t = logits[target_class]
    sel = torch.ones(t.shape, dtype=torch.bool, device=logits.device)
    for k in range(logits.shape[0]):
        if k != target_class:
            sel &= t > logits[k] if k < target_class else t >= logits[k]
    return sel


def region_weights(
    logits: torch.Tensor,
    target_class: int,
    region: str | np.ndarray | None,
    reduction: str,
    height: int,
    width: int,
) -> tuple[torch.Tensor, dict[str, object]]:
    """Weights (1, 1, Hp, Wp) of the target score, and what was used (JSON-serialisable).

    `region`: None/"predicted" (argmax == target_class; whole image if that is empty), "image", or a
    boolean (H, W) mask (e.g. the reader's mask); an empty mask also falls back to the whole image.
    Padding never counts.
    """
    _, _, hp, wp = logits.shape
    inside = torch.zeros((hp, wp), dtype=torch.bool, device=logits.device)
    inside[:height, :width] = True
    if isinstance(region, np.ndarray):
        if region.shape != (height, width):
            raise ValueError(f"region mask shape {region.shape} does not match image ({height}, {width})")
        kind = "mask"
        sel = torch.zeros_like(inside)
        sel[:height, :width] = torch.as_tensor(region.astype(bool), device=logits.device)
    elif region in (None, "predicted"):
        kind = "predicted"
        sel = predicted_region(logits[0], target_class) & inside
    elif region == "image":
        kind, sel = "image", inside
    else:
        raise ValueError(f"region must be None, one of {REGION_KINDS[:2]} or a boolean mask, got {region!r}")
    fell_back = not bool(sel.any())
    if fell_back:
        sel = inside
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}")
    w = sel.to(logits.dtype)
    if reduction == "mean":
        w = w / w.sum()
    used = {"region": kind, "region_pixels": int(sel.sum()), "region_fallback_to_image": fell_back}
    return w[None, None], used


# Models (weakly held) -> the input shapes/devices they have already run on: the first forward of a shape
# pays for allocator and kernel set-up, so only that one is repeated before timing.
_WARMED: weakref.WeakKeyDictionary[nn.Module, set[tuple]] = weakref.WeakKeyDictionary()
_FORWARD_SECONDS: weakref.WeakKeyDictionary[nn.Module, dict[tuple, float]] = weakref.WeakKeyDictionary()


def _key(x: torch.Tensor) -> tuple:
    return (tuple(x.shape), str(x.device), x.dtype)


def time_forward(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Logits of x and the seconds of one warm forward pass (a shape's first call is run twice: warm-up)."""
    key = _key(x)
    with torch.no_grad():
        if key not in _WARMED.setdefault(model, set()):
            model(x)
            _WARMED[model].add(key)
        synchronize(x.device)
        t0 = time.perf_counter()
        logits = model(x)
        synchronize(x.device)
    seconds = max(time.perf_counter() - t0, 1e-9)
    _FORWARD_SECONDS.setdefault(model, {})[key] = seconds
    return logits, seconds


def forward_seconds(model: nn.Module, x: torch.Tensor) -> float:
    """The last measured warm forward time of `model` on inputs like x; measured now if there is none."""
    known = _FORWARD_SECONDS.get(model, {}).get(_key(x))
    return known if known is not None else time_forward(model, x)[1]


def graph_forward(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(x as a leaf requiring grad, logits with their graph): one forward that a gradient method reuses."""
    leaf = x.detach().requires_grad_(True)
    with torch.enable_grad():
        return leaf, model(leaf)


def input_gradients(score: RegionScore, xs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """d score / d input for a batch (B, C, H, W) -> (gradients (B, C, H, W), scores (B,)), detached."""
    xs = xs.detach().requires_grad_(True)
    with torch.enable_grad():
        s = score(xs)[:, 0]
        (grad,) = torch.autograd.grad(s.sum(), xs)
    return grad.detach(), s.detach()
