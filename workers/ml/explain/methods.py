"""The six explanation methods. Each takes a `Context` and its own keyword parameters and returns the raw
(H, W) map (float64, not yet normalised) with the JSON-serialisable parameters it actually used.

Unknown keyword parameters raise TypeError (a typo must not silently fall back to a default).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch
from scipy import ndimage  # type: ignore[import-untyped]

from workers.ml.explain.core import Context, input_gradients
from workers.ml.models.networks import cam_layer_name

MethodResult = tuple[np.ndarray, dict[str, Any]]


def gradcam(ctx: Context, *, layer: str | None = None, antialias: bool = True) -> MethodResult:
    """Seg-Grad-CAM on a decoder layer, explaining the fixed region score: the map is
    ReLU(sum_c mean(dF/dA_c) * A_c) at the layer's resolution, then upsampled to the image.

    Upsampling (`antialias=True`, the default): when the layer is coarser than the image, the map is first
    low-passed at the layer's own grid by a separable binomial [1, 2, 1] / 4 filter (reflect borders),
    whose response cos^2(pi f) is exactly zero at that grid's Nyquist frequency, then interpolated
    bilinearly. Every decoder upsampling in these networks is a stride-2 transposed convolution with a
    3x3 kernel, which treats even and odd output pixels differently (uneven overlap) and stamps a
    period-2 checkerboard on its features; interpolated as it is, that pattern shows as stripes of period
    4 px (twice the scale factor) over the image (docs/results: "Grad-CAM artefacts"). A layer at the
    image's resolution is not filtered. `antialias=False` interpolates bilinearly only, which is the map
    of `monai.visualize.GradCAM` with its default upsampler; with the default, the same map is MONAI's
    given `upsampler=lambda size: lambda m: cam_upsample(m, size)` (tests pin both).

    Cheaper than MONAI's: the layer's output is made the leaf of the autograd graph, so the forward pass
    records nothing before it and the backward pass runs through the layers after it only (MONAI's
    backpropagates to the input).
    """
    layer = layer or cam_layer_name(ctx.model)
    target = dict(ctx.model.named_modules()).get(layer)
    if target is None:
        raise ValueError(f"layer {layer!r} not found in the model")
    saved: list[torch.Tensor] = []

    def leaf(_module: torch.nn.Module, _inputs: Any, out: torch.Tensor) -> torch.Tensor:
        saved.append(out.detach().requires_grad_(True))
        return saved[-1]

    handle = target.register_forward_hook(leaf)
    try:
        with torch.enable_grad():
            score = ctx.score(ctx.x.detach())[:, 0].sum()
            (grad,) = torch.autograd.grad(score, saved[-1])
    finally:
        handle.remove()
    acts = saved[-1].detach()
    cam = torch.relu((grad.mean(dim=(2, 3), keepdim=True) * acts).sum(dim=1, keepdim=True))
    size = (int(ctx.x.shape[-2]), int(ctx.x.shape[-1]))
    if antialias:
        cam = cam_upsample(cam, size)
    else:
        cam = torch.nn.functional.interpolate(cam, size=size, mode="bilinear", align_corners=False)
    return ctx.crop(cam), {"layer": layer, "antialias": antialias}


def cam_upsample(cam: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Grad-CAM's anti-aliased upsampling of (B, 1, h, w) maps to `size` (see `gradcam`): binomial
    [1, 2, 1] / 4 low-pass along each axis that is coarser than `size` (reflect borders), then bilinear
    interpolation (align_corners=False, as MONAI's default upsampler). Unchanged at the same size."""
    if tuple(cam.shape[-2:]) == tuple(size):
        return cam
    kernel = torch.tensor([0.25, 0.5, 0.25], dtype=cam.dtype, device=cam.device)
    for axis, (have, want) in enumerate(zip(cam.shape[-2:], size, strict=True)):
        if have < want and have > 1:
            pad = (0, 0, 1, 1) if axis == 0 else (1, 1, 0, 0)
            shape = (1, 1, 3, 1) if axis == 0 else (1, 1, 1, 3)
            padded = torch.nn.functional.pad(cam, pad, mode="reflect")
            cam = torch.nn.functional.conv2d(padded, kernel.view(shape))
    return torch.nn.functional.interpolate(cam, size=size, mode="bilinear", align_corners=False)


def saliency(ctx: Context) -> MethodResult:
    """Vanilla gradient saliency: |dF/dx|, max over channels. Reuses the clean forward's graph when the
    caller kept it (explanations.GRAPH_METHODS): one forward and one backward in all."""
    if ctx.x_leaf is not None and ctx.graph_logits is not None:
        t = ctx.target_class
        with torch.enable_grad():
            score = (ctx.graph_logits[:, t : t + 1] * ctx.score.weights).sum()
            (grad,) = torch.autograd.grad(score, ctx.x_leaf)
    else:
        grad, _ = input_gradients(ctx.score, ctx.x)
    return ctx.crop(grad.abs().amax(dim=1)), {}


def smoothgrad(
    ctx: Context, *, samples: int = 16, noise: float = 0.15, batch_size: int = 8, seed: int = 0
) -> MethodResult:
    """SmoothGrad (Smilkov et al. 2017): mean over noisy copies of |dF/dx|, max over channels.

    `noise` is the Gaussian sigma as a fraction of the image's intensity range (max - min).
    """
    if samples < 1 or batch_size < 1:
        raise ValueError("samples and batch_size must be >= 1")
    x = ctx.x
    sigma = float(noise) * float(x.max() - x.min())
    gen = torch.Generator().manual_seed(seed)  # CPU generator: identical noise on CPU and CUDA
    total = torch.zeros_like(x[:, :1].squeeze(1))
    done = 0
    while done < samples:
        n = min(batch_size, samples - done)
        eps = torch.randn((n, *x.shape[1:]), generator=gen).to(x.device, x.dtype)
        grad, _ = input_gradients(ctx.score, x + sigma * eps)
        total += grad.abs().amax(dim=1).sum(dim=0, keepdim=True)
        done += n
    used = {"samples": samples, "noise": noise, "noise_sigma": sigma, "batch_size": batch_size, "seed": seed}
    return ctx.crop(total / samples), used


def _baseline(x: torch.Tensor, kind: str, blur_sigma: float) -> torch.Tensor:
    if kind == "zeros":
        return torch.zeros_like(x)
    if kind == "blurred":
        arr = x.detach().float().cpu().numpy()
        blurred = ndimage.gaussian_filter(arr, sigma=(0, 0, blur_sigma, blur_sigma), mode="reflect")
        return torch.as_tensor(blurred, device=x.device, dtype=x.dtype)
    raise ValueError(f"baseline must be 'zeros' or 'blurred', got {kind!r}")


def integrated_gradients(
    ctx: Context,
    *,
    steps: int = 64,
    baseline: str = "blurred",
    blur_sigma: float | None = None,
    batch_size: int = 16,
    sign: str = "absolute",
    path_power: float | None = None,
) -> MethodResult:
    """Integrated gradients (Sundararajan et al. 2017), trapezoid rule over `steps` intervals.

    attributions = (x - b) * integral_0^1 dF/dx(b + a (x - b)) da, summed over channels, then |.|
    (`sign="absolute"`) or its positive part (`sign="positive"`: evidence for the target).
    Completeness: sum(attributions) should equal F(x) - F(b); the relative error is reported as
    `completeness_error` (None when F(x) == F(b)). The default "blurred" baseline (sigma = max(H, W)/16
    px) keeps the path informative. From an all-zero input an instance-normalised network's output jumps
    within alpha < ~0.01 (instance norm makes it blind to the input's scale), which a uniform grid steps
    over (completeness error > 100%); so the grid is alpha = t**path_power, t uniform, with path_power
    defaulting to 3 for "zeros" (dense near 0) and 1 for "blurred".
    """
    if steps < 1 or batch_size < 1:
        raise ValueError("steps and batch_size must be >= 1")
    if sign not in ("absolute", "positive"):
        raise ValueError("sign must be 'absolute' or 'positive'")
    x = ctx.x
    sigma = float(blur_sigma) if blur_sigma is not None else max(ctx.height, ctx.width) / 16.0
    base = _baseline(x, baseline, sigma)
    power = float(path_power) if path_power is not None else (3.0 if baseline == "zeros" else 1.0)
    if power <= 0:
        raise ValueError("path_power must be > 0")
    alphas = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64) ** power
    gaps = torch.diff(alphas)  # trapezoid weights on a non-uniform grid
    weights = torch.zeros(steps + 1, dtype=torch.float64)
    weights[:-1] += gaps / 2
    weights[1:] += gaps / 2
    avg_grad = torch.zeros_like(x, dtype=torch.float64)
    scores = torch.empty(steps + 1, dtype=torch.float64)
    for start in range(0, steps + 1, batch_size):
        a = alphas[start : start + batch_size]
        path = base + a.to(x.device, x.dtype).view(-1, 1, 1, 1) * (x - base)
        grad, s = input_gradients(ctx.score, path)
        w = weights[start : start + batch_size].to(x.device).view(-1, 1, 1, 1)
        avg_grad += (grad.double() * w).sum(dim=0, keepdim=True)
        scores[start : start + len(a)] = s.double().cpu()
    attr = ((x - base).double() * avg_grad).sum(dim=1)  # (1, Hp, Wp)
    total, delta = float(attr.sum()), float(scores[-1] - scores[0])
    error = abs(total - delta) / abs(delta) if abs(delta) > 1e-12 else None
    raw = attr.abs() if sign == "absolute" else attr.clamp(min=0.0)
    used = {
        "steps": steps,
        "baseline": baseline,
        "blur_sigma": sigma if baseline == "blurred" else None,
        "batch_size": batch_size,
        "sign": sign,
        "rule": "trapezoid",
        "path_power": power,
        "score_input": float(scores[-1]),
        "score_baseline": float(scores[0]),
        "attribution_sum": total,
        "completeness_error": error,
    }
    return ctx.crop(raw), used


def occlusion(
    ctx: Context,
    *,
    mask_size: int = 32,
    overlap: float = 0.5,
    mode: str | float = "gaussian",
    batch_size: int = 16,
) -> MethodResult:
    """Occlusion sensitivity via MONAI: map = F(x) - F(x with a patch around the pixel occluded).

    Negative drops (occlusion raised the score) are clipped to 0. `mask_size` is capped at the image size.
    `mode`: "gaussian" (patch multiplied by 1 - Gaussian), "mean_img", "mean_patch" or a constant value.
    """
    from monai.visualize import OcclusionSensitivity

    if isinstance(mode, str) and mode not in ("gaussian", "mean_img", "mean_patch"):
        raise ValueError(f"unknown occlusion mode {mode!r}")
    size = int(min(mask_size, *ctx.x.shape[-2:]))
    occ = OcclusionSensitivity(
        nn_module=ctx.score,
        mask_size=size,
        n_batch=batch_size,
        verbose=False,
        mode=float(mode) if not isinstance(mode, str) else mode,
        overlap=overlap,
        activate=False,  # the score is already what we explain; MONAI's softmax/sigmoid choice does not apply
    )
    with torch.no_grad(), warnings.catch_warnings():
        # MONAI 1.6 indexes with lists; torch warns on every patch. Harmless, and not ours to fix.
        warnings.filterwarnings("ignore", message="Using a non-tuple sequence", category=UserWarning)
        base = float(ctx.score(ctx.x)[0, 0])
        occluded, _ = occ(ctx.x)
    drop = base - torch.as_tensor(occluded)[0, 0]
    used = {
        "mask_size": size,
        "overlap": overlap,
        "mode": mode,
        "batch_size": batch_size,
        "score_input": base,
    }
    return ctx.crop(drop.clamp(min=0.0)), used


def uncertainty(ctx: Context) -> MethodResult:
    """Predictive entropy of the softmax (dropout off), divided by log K: already in [0, 1] with an
    absolute meaning (1 = uniform over the K classes), so it is not rescaled per image."""
    with torch.no_grad():
        logits = ctx.model(ctx.x)
        logp = torch.log_softmax(logits.double(), dim=1)
        ent = -(logp.exp() * logp).sum(dim=1)
    k = logits.shape[1]
    raw = ent / math.log(k) if k > 1 else torch.zeros_like(ent)
    return ctx.crop(raw.clamp(0.0, 1.0)), {"normalised_by": "log(num_classes)", "num_classes": int(k)}
