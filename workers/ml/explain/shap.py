"""SHAP for the segmentation model's fixed target score F (see `explain_core`): KernelSHAP on superpixels
and GradientSHAP (captum). Both report how far their attributions are from completeness/additivity:

    completeness_error = |sum(attributions) - (F(x) - F(baseline))| / |F(x) - F(baseline)|

(None when the denominator is 0). KernelSHAP enforces additivity in its regression (error ~ float
rounding); GradientSHAP (expected gradients) satisfies it only in expectation, so its error shrinks with
`samples` and is the honest measure of how converged the map is.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

from workers.ml.explain.core import Context
from workers.ml.explain.lime import baseline_image, coalition_scores, signed_map, superpixels
from workers.ml.explain.methods import MethodResult


def _relative_error(total: float, delta: float) -> float | None:
    return abs(total - delta) / abs(delta) if abs(delta) > 1e-12 else None


def _shapley_coalitions(m: int, samples: int, rng: np.random.Generator) -> np.ndarray:
    """Coalitions drawn from the Shapley kernel: size s in 1..M-1 with p(s) ~ (M-1) / (s (M-s)), members
    uniform; each followed by its complement (paired sampling halves the variance). Shape (2*ceil(n/2), M)."""
    sizes = np.arange(1, m)
    p = (m - 1) / (sizes * (m - sizes))
    p /= p.sum()
    half = (samples + 1) // 2
    z = np.zeros((half, m))
    for i, s in enumerate(rng.choice(sizes, size=half, p=p)):
        z[i, rng.choice(m, size=s, replace=False)] = 1.0
    return np.vstack([z, 1.0 - z])


def _constrained_fit(z: np.ndarray, y: np.ndarray, f0: float, f1: float) -> np.ndarray:
    """Least squares y - f0 ~ z @ phi subject to sum(phi) = f1 - f0 (eliminate the last feature, as the
    reference KernelExplainer does); samples are already kernel-distributed, so weights are uniform."""
    delta = f1 - f0
    target = y - f0 - z[:, -1] * delta
    design = z[:, :-1] - z[:, -1:]
    head, *_ = np.linalg.lstsq(design, target, rcond=None)
    return np.append(head, delta - head.sum())


def kernel_shap(
    ctx: Context,
    *,
    n_segments: int = 50,
    compactness: float = 10.0,
    samples: int = 256,
    baseline: str = "blurred",
    blur_sigma: float | None = None,
    sign: str = "positive",
    batch_size: int = 32,
    seed: int = 0,
) -> MethodResult:
    """KernelSHAP (Lundberg & Lee 2017) over SLIC superpixels: Shapley values of g(z) = F(x_z), where
    dropped superpixels take the baseline image. `samples` (rounded up to even) + 2 forward passes.
    `fit_r2` is the R^2 of the additive model on its own coalitions (1 = F is additive in superpixels)."""
    if samples < 2:
        raise ValueError("samples must be >= 2")
    labels = superpixels(ctx, n_segments, compactness)
    m = int(labels.max()) + 1
    sigma = float(blur_sigma) if blur_sigma is not None else max(ctx.height, ctx.width) / 16.0
    base = baseline_image(ctx.x, baseline, sigma)
    ends = coalition_scores(ctx, labels, base, np.stack([np.zeros(m), np.ones(m)]), batch_size)
    f0, f1 = float(ends[0]), float(ends[1])
    if m == 1:  # one superpixel: its Shapley value is the whole difference
        phi, r2 = np.array([f1 - f0]), 1.0
    else:
        z = _shapley_coalitions(m, samples, np.random.default_rng(seed))
        y = coalition_scores(ctx, labels, base, z, batch_size)
        phi = _constrained_fit(z, y, f0, f1)
        resid = y - f0 - z @ phi
        r2 = 1.0 - float(resid.var()) / max(float(y.var()), 1e-300)
    used = {
        "n_segments": n_segments,
        "superpixels": m,
        "compactness": compactness,
        "samples": samples,
        "baseline": baseline,
        "blur_sigma": sigma if baseline == "blurred" else None,
        "sign": sign,
        "batch_size": batch_size,
        "seed": seed,
        "score_input": f1,
        "score_baseline": f0,
        "attribution_sum": float(phi.sum()),
        "completeness_error": _relative_error(float(phi.sum()), f1 - f0),
        "fit_r2": r2,
    }
    return signed_map(ctx, labels, phi, sign), used


@contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """captum draws from numpy's and torch's global generators: seed them, and restore them after."""
    state = np.random.get_state()
    devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            np.random.seed(seed)
            torch.manual_seed(seed)
            yield
    finally:
        np.random.set_state(state)


def gradient_shap(
    ctx: Context,
    *,
    samples: int = 64,
    baselines: tuple[str, ...] | list[str] = ("blurred", "mean"),
    blur_sigma: float | None = None,
    noise: float = 0.0,
    sign: str = "absolute",
    seed: int = 0,
) -> MethodResult:
    """GradientSHAP (captum): expected gradients over a random baseline from `baselines` and a random
    point on the straight path to x (plus Gaussian noise, sigma = `noise` x intensity range), summed over
    channels. `samples` forward + backward passes, all in one batch. Completeness is checked against
    F(x) - mean_b F(b), which is what the estimator's sum converges to (exactly, without noise)."""
    from captum.attr import GradientShap

    if samples < 1 or not baselines:
        raise ValueError("samples must be >= 1 and baselines non-empty")
    x = ctx.x
    sigma = float(blur_sigma) if blur_sigma is not None else max(ctx.height, ctx.width) / 16.0
    bases = torch.cat([baseline_image(x, kind, sigma) for kind in baselines])
    stdev = float(noise) * float(x.max() - x.min())
    with _seeded(seed, x.device), torch.enable_grad():
        attr = GradientShap(ctx.score).attribute(
            x, baselines=bases, n_samples=samples, stdevs=stdev, target=0
        )
    attr = attr.detach().double().sum(dim=1)  # (1, Hp, Wp)
    with torch.no_grad():
        f_x = float(ctx.score(x)[0, 0])
        f_b = float(ctx.score(bases)[:, 0].double().mean())
    total = float(attr.sum())
    if sign not in ("positive", "absolute"):
        raise ValueError("sign must be 'positive' or 'absolute'")
    raw = attr.abs() if sign == "absolute" else attr.clamp(min=0.0)
    used = {
        "samples": samples,
        "baselines": list(baselines),
        "blur_sigma": sigma if "blurred" in baselines else None,
        "noise": noise,
        "sign": sign,
        "seed": seed,
        "score_input": f_x,
        "score_baseline_mean": f_b,
        "attribution_sum": total,
        "completeness_error": _relative_error(total, f_x - f_b),
    }
    return ctx.crop(raw), used
