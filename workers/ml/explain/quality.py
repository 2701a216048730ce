"""Model-agnostic quality metrics for saliency maps: fidelity, localisation and consistency.

* fidelity: deletion / insertion curves (Petsiuk et al., RISE 2018) driven by any
  ``score_fn(batch (N, C, H, W) float32) -> (N,)`` returning the target-class score;
* localisation against an expert mask: pointing game and energy inside the mask;
* consistency: similarity of maps under small noise and shifts.

Images are float (C, H, W) as produced by `transforms.prepare_image`; saliency maps are (H, W).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import ndimage

ScoreFn = Callable[[np.ndarray], np.ndarray]
ExplainFn = Callable[[np.ndarray], np.ndarray]
Baseline = Literal["blur", "mean"] | np.ndarray


@dataclass(frozen=True)
class FidelityCurve:
    """Score after perturbing `fractions` of the pixels (most salient first); `auc` by trapezoid rule."""

    fractions: np.ndarray  # (steps + 1,) from 0.0 to 1.0
    scores: np.ndarray  # (steps + 1,)
    auc: float


def _check_image_map(image: np.ndarray, saliency: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    image = np.asarray(image, dtype=np.float32)
    saliency = np.asarray(saliency, dtype=np.float64)
    if image.ndim != 3 or saliency.shape != image.shape[1:]:
        raise ValueError(f"need image (C, H, W) and saliency (H, W); got {image.shape} and {saliency.shape}")
    return image, saliency


def make_baseline(
    image: np.ndarray, baseline: Baseline = "blur", blur_sigma: float | None = None
) -> np.ndarray:
    """The image pixels are replaced with: "blur" (Gaussian, sigma default max(H, W) / 20 px, per
    channel), "mean" (each channel's mean) or a given (C, H, W) array."""
    if isinstance(baseline, np.ndarray):
        if baseline.shape != image.shape:
            raise ValueError(f"baseline shape {baseline.shape} differs from image {image.shape}")
        return baseline.astype(np.float32)
    if baseline == "mean":
        return np.broadcast_to(image.mean(axis=(1, 2), keepdims=True), image.shape).astype(np.float32)
    if baseline == "blur":
        sigma = blur_sigma if blur_sigma is not None else max(image.shape[1:]) / 20.0
        return ndimage.gaussian_filter(image, sigma=(0.0, sigma, sigma)).astype(np.float32)
    raise ValueError(f"unknown baseline {baseline!r}")


def saliency_order(saliency: np.ndarray) -> np.ndarray:
    """Flat pixel indices by decreasing saliency; ties keep raster order, NaN counts as least salient."""
    flat = np.nan_to_num(saliency.ravel().astype(np.float64), nan=-np.inf)
    return np.argsort(-flat, kind="stable")


def _scores(score_fn: ScoreFn, batch: np.ndarray) -> np.ndarray:
    out = np.asarray(score_fn(batch), dtype=np.float64).reshape(-1)
    if out.shape != (batch.shape[0],) or not np.isfinite(out).all():
        raise ValueError(f"score_fn must return {batch.shape[0]} finite scores, got shape {out.shape}")
    return out


def _curve(
    score_fn: ScoreFn, start: np.ndarray, end: np.ndarray, order: np.ndarray, steps: int, batch_size: int
) -> FidelityCurve:
    """Scores of `start` with its first n_k pixels (in `order`) taken from `end`, n_k = round(k/steps * HW)."""
    if steps < 1 or batch_size < 1:
        raise ValueError("steps and batch_size must be >= 1")
    c, h, w = start.shape
    counts = np.round(np.linspace(0, h * w, steps + 1)).astype(np.int64)
    start_flat, end_flat = start.reshape(c, -1), end.reshape(c, -1)
    scores = []
    for lo in range(0, counts.size, batch_size):
        chunk = counts[lo : lo + batch_size]
        batch = np.repeat(start_flat[None], chunk.size, axis=0)
        for i, n in enumerate(chunk):
            idx = order[:n]
            batch[i][:, idx] = end_flat[:, idx]
        scores.append(_scores(score_fn, batch.reshape(chunk.size, c, h, w)))
    fractions = counts / float(h * w)
    values = np.concatenate(scores)
    return FidelityCurve(fractions=fractions, scores=values, auc=float(np.trapezoid(values, fractions)))


def deletion_curve(
    score_fn: ScoreFn,
    image: np.ndarray,
    saliency: np.ndarray,
    *,
    steps: int = 20,
    baseline: Baseline = "blur",
    blur_sigma: float | None = None,
    batch_size: int = 16,
) -> FidelityCurve:
    """Remove pixels (replace with the baseline) in order of decreasing saliency, in `steps` chunks."""
    image, saliency = _check_image_map(image, saliency)
    base = make_baseline(image, baseline, blur_sigma)
    return _curve(score_fn, image, base, saliency_order(saliency), steps, batch_size)


def insertion_curve(
    score_fn: ScoreFn,
    image: np.ndarray,
    saliency: np.ndarray,
    *,
    steps: int = 20,
    baseline: Baseline = "blur",
    blur_sigma: float | None = None,
    batch_size: int = 16,
) -> FidelityCurve:
    """Start from the baseline and add the image's pixels in order of decreasing saliency."""
    image, saliency = _check_image_map(image, saliency)
    base = make_baseline(image, baseline, blur_sigma)
    return _curve(score_fn, base, image, saliency_order(saliency), steps, batch_size)


def deletion_auc(score_fn: ScoreFn, image: np.ndarray, saliency: np.ndarray, **kwargs: object) -> float:
    """Area under the deletion curve; lower = more faithful map. The x axis is the perturbed fraction
    (0..1) and the y axis the raw score, so the AUC lies in [0, 1] when scores do (e.g. softmax).
    Keyword arguments as `deletion_curve`; steps + 1 score_fn evaluations in batches of `batch_size`."""
    return deletion_curve(score_fn, image, saliency, **kwargs).auc  # type: ignore[arg-type]


def insertion_auc(score_fn: ScoreFn, image: np.ndarray, saliency: np.ndarray, **kwargs: object) -> float:
    """Area under the insertion curve; higher = more faithful map. Same axes and range as `deletion_auc`."""
    return insertion_curve(score_fn, image, saliency, **kwargs).auc  # type: ignore[arg-type]


def _check_map_mask(saliency: np.ndarray, ref_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    saliency = np.nan_to_num(np.asarray(saliency, dtype=np.float64), nan=-np.inf)
    mask = np.asarray(ref_mask) != 0
    if saliency.shape != mask.shape:
        raise ValueError(f"saliency {saliency.shape} and mask {mask.shape} differ in shape")
    return saliency, mask


def pointing_game(saliency: np.ndarray, ref_mask: np.ndarray, *, tolerance_px: float = 0.0) -> bool:
    """True when the map's maximum lies inside `ref_mask` or within `tolerance_px` (Euclidean, pixels)
    of it. When several pixels tie for the maximum all must hit, so a flat map cannot score; an empty
    mask (nothing to point at) gives False."""
    saliency, mask = _check_map_mask(saliency, ref_mask)
    if not mask.any():
        return False
    if tolerance_px > 0:
        mask = ndimage.distance_transform_edt(~mask) <= tolerance_px
    peaks = saliency == saliency.max()
    return bool(mask[peaks].all())


def energy_inside(saliency: np.ndarray, ref_mask: np.ndarray) -> float:
    """Share of the map's positive mass inside `ref_mask`, in [0, 1]. Negative values (evidence
    against the class) are ignored; a map with no positive mass gives 0.0."""
    saliency, mask = _check_map_mask(saliency, ref_mask)
    positive = np.clip(saliency, 0.0, None)
    total = float(positive.sum())
    return 0.0 if total <= 0 else float(positive[mask].sum()) / total


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson r; two constant maps are identical or not (1.0 / 0.0), one constant map gives 0.0."""
    sa, sb = a.std(), b.std()
    if sa == 0 or sb == 0:
        return 1.0 if sa == sb and np.allclose(a, b) else 0.0
    return float(np.clip(np.mean((a - a.mean()) * (b - b.mean())) / (sa * sb), -1.0, 1.0))


def _ssim_global(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM computed once over the whole map (no window), constants scaled by the joint value range."""
    span = max(float(max(a.max(), b.max()) - min(a.min(), b.min())), 1e-12)
    c1, c2 = (0.01 * span) ** 2, (0.03 * span) ** 2
    ma, mb = a.mean(), b.mean()
    cov = np.mean((a - ma) * (b - mb))
    num = (2 * ma * mb + c1) * (2 * cov + c2)
    return float(num / ((ma**2 + mb**2 + c1) * (a.var() + b.var() + c2)))


def _shift(image: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Content moved by (+dy, +dx) pixels; the uncovered border repeats the edge (no wrap-around)."""
    p = max(abs(dy), abs(dx))
    if p == 0:
        return image.copy()
    _, h, w = image.shape
    padded = np.pad(image, ((0, 0), (p, p), (p, p)), mode="edge")
    return padded[:, p - dy : p - dy + h, p - dx : p - dx + w]


def _overlap(shape: tuple[int, int], dy: int, dx: int) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
    """Slices of the reference map and of a map made from an image shifted by (dy, dx) that show the
    same content: undoing the shift and dropping the border the shift filled in."""
    h, w = shape
    ref = (slice(max(0, -dy), h - max(0, dy)), slice(max(0, -dx), w - max(0, dx)))
    moved = (slice(max(0, dy), h + min(0, dy)), slice(max(0, dx), w + min(0, dx)))
    return ref, moved


def consistency(
    explain_fn: ExplainFn,
    image: np.ndarray,
    *,
    noise_std: float = 0.01,
    shift_px: int = 2,
    n: int = 5,
    similarity: Literal["pearson", "ssim"] = "pearson",
    seed: int = 0,
) -> float:
    """Mean similarity between `explain_fn(image)` and the maps of `n` perturbed copies of the image.

    Each copy gets Gaussian noise (std `noise_std`, in image units) and an integer shift drawn uniformly
    from [-shift_px, shift_px] per axis; the shift is undone before comparing, on the overlap only.
    `explain_fn` maps a (C, H, W) image to an (H, W) map. Costs n + 1 explanations. Pearson lies in
    [-1, 1]; a deterministic explainer with zero noise and no shift scores exactly 1.0.
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 3 or n < 1 or shift_px < 0 or noise_std < 0:
        raise ValueError("need image (C, H, W), n >= 1, shift_px >= 0 and noise_std >= 0")
    sim = {"pearson": _pearson, "ssim": _ssim_global}[similarity]
    rng = np.random.default_rng(seed)
    reference = np.asarray(explain_fn(image), dtype=np.float64)
    values = []
    for _ in range(n):
        dy, dx = (int(v) for v in rng.integers(-shift_px, shift_px + 1, size=2))
        noisy = (
            image + rng.normal(0.0, noise_std, size=image.shape).astype(np.float32) if noise_std else image
        )
        moved_map = np.asarray(explain_fn(_shift(noisy, dy, dx)), dtype=np.float64)
        ref_sl, moved_sl = _overlap(reference.shape, dy, dx)
        values.append(sim(reference[ref_sl], moved_map[moved_sl]))
    return float(np.mean(values))
