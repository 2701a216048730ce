"""LIME on superpixels (Ribeiro et al. 2016) for the segmentation model's fixed target score, and the
superpixel/coalition machinery KernelSHAP shares.

A coalition z in {0, 1}^M keeps the superpixels with z_j = 1 and replaces the others with a baseline
(the blurred image by default); g(z) = F(x_z) is the target score of `explain_core` on that image.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage  # type: ignore[import-untyped]

from workers.ml.explain.core import Context
from workers.ml.explain.methods import MethodResult

BASELINES = ("blurred", "mean", "zeros")


def superpixels(ctx: Context, n_segments: int, compactness: float) -> np.ndarray:
    """SLIC labels 0..M-1 over the padded input (Hp, Wp), computed on the unpadded image rescaled to
    [0, 1] (SLIC's compactness is relative to the intensity range); padding takes its edge's label.
    Falls back to a regular grid of ~n_segments cells when SLIC finds a single segment."""
    from skimage.segmentation import slic

    img = ctx.x[0, :, : ctx.height, : ctx.width].detach().float().cpu().numpy()
    lo, hi = float(img.min()), float(img.max())
    img = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
    channel_axis = 0 if img.shape[0] > 1 else None
    src = img if channel_axis is not None else img[0]
    # convert2lab=False: prepared channels are standardised intensities, not sRGB.
    labels = slic(
        src,
        n_segments=n_segments,
        compactness=compactness,
        channel_axis=channel_axis,
        convert2lab=False,
        start_label=0,
    )
    if len(np.unique(labels)) < 2:  # e.g. a flat image: a regular grid still gives a spatial map
        labels = _grid(ctx.height, ctx.width, n_segments)
    _, labels = np.unique(labels, return_inverse=True)  # consecutive 0..M-1 whatever SLIC returned
    labels = labels.reshape(ctx.height, ctx.width)
    hp, wp = ctx.x.shape[-2:]
    return np.pad(labels, ((0, hp - ctx.height), (0, wp - ctx.width)), mode="edge")


def _grid(height: int, width: int, n_segments: int) -> np.ndarray:
    """About `n_segments` rectangular cells, row-major labels."""
    side = max(1, int(np.sqrt(n_segments)))
    rows = np.minimum(np.arange(height) * side // max(height, 1), side - 1)
    cols = np.minimum(np.arange(width) * side // max(width, 1), side - 1)
    return rows[:, None] * side + cols[None, :]


def baseline_image(x: torch.Tensor, kind: str, blur_sigma: float) -> torch.Tensor:
    """What removed superpixels become: "blurred" (Gaussian, sigma px), "mean" (per channel) or "zeros"."""
    if kind == "zeros":
        return torch.zeros_like(x)
    if kind == "mean":
        return x.mean(dim=(2, 3), keepdim=True).expand_as(x).clone()
    if kind == "blurred":
        arr = x.detach().float().cpu().numpy()
        blurred = ndimage.gaussian_filter(arr, sigma=(0, 0, blur_sigma, blur_sigma), mode="reflect")
        return torch.as_tensor(blurred, device=x.device, dtype=x.dtype)
    raise ValueError(f"baseline must be one of {BASELINES}, got {kind!r}")


def coalition_scores(
    ctx: Context, labels: np.ndarray, base: torch.Tensor, z: np.ndarray, batch_size: int
) -> np.ndarray:
    """g(z) for coalitions z (n, M) of 0/1: the target score with the dropped superpixels replaced."""
    seg = torch.as_tensor(labels, device=ctx.x.device, dtype=torch.long)
    out = np.empty(len(z), dtype=np.float64)
    with torch.no_grad():
        for start in range(0, len(z), batch_size):
            zb = torch.as_tensor(z[start : start + batch_size], device=ctx.x.device, dtype=ctx.x.dtype)
            keep = zb[:, seg][:, None]  # (b, 1, Hp, Wp): 1 where the pixel's superpixel is kept
            xs = base + keep * (ctx.x - base)
            out[start : start + len(zb)] = ctx.score(xs)[:, 0].double().cpu().numpy()
    return out


def paint(labels: np.ndarray, values: np.ndarray) -> torch.Tensor:
    """(Hp, Wp) map with each superpixel set to its value."""
    return torch.as_tensor(np.asarray(values, dtype=np.float64)[labels])


def signed_map(ctx: Context, labels: np.ndarray, values: np.ndarray, sign: str) -> np.ndarray:
    """Per-superpixel values to the cropped (H, W) raw map: positive part (evidence for) or |.|."""
    if sign not in ("positive", "absolute"):
        raise ValueError("sign must be 'positive' or 'absolute'")
    v = np.clip(values, 0.0, None) if sign == "positive" else np.abs(values)
    return ctx.crop(paint(labels, v))


def lime(
    ctx: Context,
    *,
    n_segments: int = 50,
    compactness: float = 10.0,
    samples: int = 200,
    keep_probability: float = 0.5,
    kernel_width: float = 0.25,
    alpha: float = 1.0,
    baseline: str = "blurred",
    blur_sigma: float | None = None,
    sign: str = "positive",
    batch_size: int = 32,
    seed: int = 0,
) -> MethodResult:
    """LIME: a weighted ridge regression g(z) ~ b + sum_j w_j z_j over random coalitions, weighted by
    exp(-d^2 / kernel_width^2) with d the cosine distance of z to the all-ones coalition; the map is
    w painted on the superpixels. `samples` (+1 for the clean image) forward passes.
    `surrogate_r2` (weighted R^2 of the fit on its own samples) says how linear the score is locally.
    """
    from sklearn.linear_model import Ridge

    if samples < 2 or not 0.0 < keep_probability < 1.0:
        raise ValueError("samples must be >= 2 and keep_probability in (0, 1)")
    labels = superpixels(ctx, n_segments, compactness)
    m = int(labels.max()) + 1
    sigma = float(blur_sigma) if blur_sigma is not None else max(ctx.height, ctx.width) / 16.0
    base = baseline_image(ctx.x, baseline, sigma)
    rng = np.random.default_rng(seed)
    z = (rng.random((samples, m)) < keep_probability).astype(np.float64)
    z = np.vstack([np.ones((1, m)), z])  # the clean image anchors the local fit
    y = coalition_scores(ctx, labels, base, z, batch_size)
    cos = z.sum(axis=1) / np.sqrt(np.maximum(z.sum(axis=1), 1e-12) * m)  # cosine similarity to all-ones
    weights = np.exp(-((1.0 - cos) ** 2) / kernel_width**2)
    reg = Ridge(alpha=alpha).fit(z, y, sample_weight=weights)
    used = {
        "n_segments": n_segments,
        "superpixels": m,
        "compactness": compactness,
        "samples": samples,
        "keep_probability": keep_probability,
        "kernel_width": kernel_width,
        "alpha": alpha,
        "baseline": baseline,
        "blur_sigma": sigma if baseline == "blurred" else None,
        "sign": sign,
        "batch_size": batch_size,
        "seed": seed,
        "score_input": float(y[0]),
        "surrogate_r2": float(reg.score(z, y, sample_weight=weights)),
    }
    return signed_map(ctx, labels, reg.coef_, sign), used
