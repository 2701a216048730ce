"""Uncertainty scoring of an unlabelled pool with MC dropout or mirror TTA (the expensive half of active
learning).

Contracts:
- Inputs are prepared float32 (C, H, W) images (sizes may differ). Per case, T predictive samples, all T
  copies of a batch stacked into as few forward calls as ``max_forward`` allows:
  ``sampling="dropout"``: T = ``mc_samples`` stochastic passes with only the Dropout modules in train mode
  (normalisation stays in eval); ``sampling="mirror"``: T = min(``mc_samples``, 4) deterministic passes in
  eval mode over the image's mirrorings (identity, left-right, up-down, both; each output mirrored back),
  nnU-Net's test-time augmentation, for networks without dropout (whose MC samples would all be equal).
- Per pixel, from the T softmax samples p_t: predictive entropy H[mean p], MC variance (variance over
  samples, averaged over classes) and mutual information BALD = H[mean p] - mean_t H[p_t] (>= 0).
- Per case those maps are reduced by ``aggregation``: "mean" (all pixels), "topk" (mean of the
  ``topk_fraction`` most uncertain pixels of each map), "foreground" (weighted by the predicted
  foreground probability 1 - mean p[background]; 0 when nothing looks like foreground).
- ``mean_probs`` (N, K) are the class probabilities reduced with the same pixel weighting ("topk" uses
  the top entropy pixels); least confidence = 1 - max_k and margin = 1 - (top1 - top2) come from them,
  as modAL computes them from a classifier's predict_proba. Higher always means more uncertain.
- ``embeddings`` are `bottleneck_embedding` features averaged over the T passes (no extra forward).
- ``uncertainty_maps``: entropy / ln K, float32 (H, W) in [0, 1], cropped to each image's size.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from workers.ml.models.inference import group_by_shape, model_device, network_divisor
from workers.ml.models.networks import bottleneck_embedding
from workers.ml.models.transforms import pad_to_multiple

AGGREGATIONS = ("mean", "topk", "foreground")
SAMPLINGS = ("dropout", "mirror")
MIRRORS: tuple[tuple[int, ...], ...] = ((), (3,), (2,), (2, 3))  # flipped dims of (B, C, H, W)


@dataclass(frozen=True)
class PoolScores:
    entropy: np.ndarray  # (N,)
    bald: np.ndarray  # (N,)
    variance: np.ndarray  # (N,)
    least_confidence: np.ndarray  # (N,)
    margin: np.ndarray  # (N,)
    mean_probs: np.ndarray  # (N, K)
    foreground_fraction: np.ndarray  # (N,) share of pixels whose arg-max is not background
    embeddings: np.ndarray  # (N, D)
    uncertainty_maps: list[np.ndarray]  # (H, W) float32 in [0, 1] per case


@dataclass(frozen=True)
class PixelUncertainty:
    mean_probs: torch.Tensor  # (B, K, H, W)
    entropy: torch.Tensor  # (B, H, W)
    bald: torch.Tensor  # (B, H, W)
    variance: torch.Tensor  # (B, H, W)


def fast_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """Element-wise inverted dropout with keep probability 1 - p quantised to 1/65536.

    On the CPU, torch's own dropout draws one Bernoulli sample per element and costs about as much as
    the convolutions of this UNet; here one 64-bit random integer yields four 16-bit uniforms, which
    halves the cost of an MC-dropout pass's dropout. Same distribution up to the quantisation of p.
    """
    if p <= 0.0:
        return x
    n = x.numel()
    bits = torch.randint(-(2**63), 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64, device=x.device)
    u16 = bits.view(torch.int16)[:n].view(x.shape)  # uniform on [-32768, 32767]
    keep = u16 >= -32768 + round(p * 65536)
    return torch.where(keep, x, 0.0).mul_(1.0 / (1.0 - p))


def _fast_forward(module: nn.Dropout) -> Callable[[torch.Tensor], torch.Tensor]:
    def forward(x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or module.p >= 1.0:  # CUDA's fused dropout is already cheap
            return nn.functional.dropout(x, module.p, module.training)
        return fast_dropout(x, module.p) if module.training else x

    return forward


@contextmanager
def mc_dropout(model: nn.Module, *, fast: bool = True) -> Iterator[nn.Module]:
    """Eval mode except Dropout modules (train mode); restores modes (and forwards) on exit.

    With `fast`, element-wise `nn.Dropout` modules use `fast_dropout` on CPU tensors for the duration.
    """
    modes = {m: m.training for m in model.modules()}
    model.eval()
    patched: list[nn.Module] = []
    for m in model.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd):
            m.train()
            if fast and type(m) is nn.Dropout:
                m.forward = _fast_forward(m)  # type: ignore[method-assign,assignment]
                patched.append(m)
    try:
        yield model
    finally:
        for m in patched:
            del m.forward  # back to the class's forward
        for m, mode in modes.items():
            m.train(mode)


def pixel_uncertainty(samples: torch.Tensor) -> PixelUncertainty:
    """samples: softmax probabilities (T, B, K, H, W) -> per-pixel measures (natural log)."""
    mean = samples.mean(dim=0)
    entropy = torch.special.entr(mean).sum(dim=1)
    expected = torch.special.entr(samples).sum(dim=2).mean(dim=0)
    bald = (entropy - expected).clamp_min(0.0)  # tiny negatives are rounding
    # E[p^2] - E[p]^2: reductions over the leading T axis are plain sums of slices, ~10x cheaper than .var
    variance = ((samples * samples).mean(dim=0) - mean * mean).clamp_min(0.0).mean(dim=1)
    return PixelUncertainty(mean, entropy, bald, variance)


def _weights(pu: PixelUncertainty, aggregation: str, topk_fraction: float) -> torch.Tensor:
    """Pixel weights (B, H*W) summing to 1 per case (or all 0 for "foreground" with no foreground)."""
    b = pu.entropy.shape[0]
    if aggregation == "mean":
        n = pu.entropy[0].numel()
        return torch.full((b, n), 1.0 / n, device=pu.entropy.device)
    if aggregation == "topk":
        flat = pu.entropy.reshape(b, -1)
        k = max(1, math.ceil(topk_fraction * flat.shape[1]))
        w = torch.zeros_like(flat)
        return w.scatter_(1, flat.topk(k, dim=1).indices, 1.0 / k)
    if aggregation == "foreground":
        fg = (1.0 - pu.mean_probs[:, 0]).reshape(b, -1).clamp_min(0.0)
        total = fg.sum(dim=1, keepdim=True)
        return torch.where(total > 1e-6, fg / total.clamp_min(1e-6), torch.zeros_like(fg))
    raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")


def aggregate_map(
    values: torch.Tensor, aggregation: str, weights: torch.Tensor, topk_fraction: float
) -> torch.Tensor:
    """Reduce a (B, H, W) map to (B,). "topk" takes the map's own top pixels, the others use `weights`."""
    flat = values.reshape(values.shape[0], -1)
    if aggregation == "topk":
        k = max(1, math.ceil(topk_fraction * flat.shape[1]))
        return flat.topk(k, dim=1).values.mean(dim=1)
    return (flat * weights).sum(dim=1)


def _case_scores(pu: PixelUncertainty, aggregation: str, topk_fraction: float) -> dict[str, torch.Tensor]:
    b, k = pu.mean_probs.shape[:2]
    w = _weights(pu, aggregation, topk_fraction)
    probs = torch.einsum("bkn,bn->bk", pu.mean_probs.reshape(b, k, -1), w)
    if aggregation == "foreground":  # no foreground at all: the case is confidently background
        empty = w.sum(dim=1) == 0
        probs[empty] = torch.nn.functional.one_hot(torch.zeros_like(empty, dtype=torch.long), k).to(probs)[
            empty
        ]
    top2 = probs.topk(min(2, k), dim=1).values
    second = top2[:, 1] if k > 1 else torch.zeros_like(top2[:, 0])
    return {
        "entropy": aggregate_map(pu.entropy, aggregation, w, topk_fraction),
        "bald": aggregate_map(pu.bald, aggregation, w, topk_fraction),
        "variance": aggregate_map(pu.variance, aggregation, w, topk_fraction),
        "least_confidence": 1.0 - top2[:, 0],
        "margin": 1.0 - (top2[:, 0] - second),
        "mean_probs": probs,
        # arg-max > 0 without an arg-max over K: some class beats background strictly (ties -> background)
        "foreground_fraction": (pu.mean_probs[:, 1:].amax(dim=1) > pu.mean_probs[:, 0])
        .float()
        .mean(dim=(1, 2)),
    }


def mc_forward(
    model: nn.Module, x: torch.Tensor, mc_samples: int, max_forward: int, sampling: str = "dropout"
) -> tuple[torch.Tensor, torch.Tensor]:
    """T passes of batch x (B, C, H, W) -> (softmax (T, B, K, H, W), embeddings (B, D)).

    The batch is repeated T times (mirrored per sample for "mirror") and cut into forward calls of at most
    `max_forward` images; the bottleneck embedding is taken from the same calls via a hook on the model's
    output. Stochasticity (dropout) is the caller's: see `_mc_groups`.
    """
    b = x.shape[0]
    flips = [MIRRORS[t] for t in range(mc_samples)] if sampling == "mirror" else [()] * mc_samples
    rep = torch.cat([x.flip(f) if f else x for f in flips])  # index t * B + i is sample t of image i
    logits: list[torch.Tensor] = []  # filled by the hook: bottleneck_embedding's own forward output
    embs = []
    handle = model.register_forward_hook(lambda _m, _i, out: logits.append(out))
    try:
        for s in range(0, rep.shape[0], max_forward):
            embs.append(bottleneck_embedding(model, rep[s : s + max_forward]))
    finally:
        handle.remove()
    probs = [torch.softmax(z, dim=1) for z in logits]
    p = torch.cat(probs).reshape(mc_samples, b, *probs[0].shape[1:])
    if sampling == "mirror":
        p = torch.stack([p[t].flip(f) if f else p[t] for t, f in enumerate(flips)])
    e = torch.cat(embs).reshape(mc_samples, b, -1).mean(dim=0)
    return p, e


def sample_count(mc_samples: int, sampling: str) -> int:
    """T: `mc_samples` dropout samples, or at most the 4 mirrorings."""
    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")
    return min(mc_samples, len(MIRRORS)) if sampling == "mirror" else mc_samples


def default_max_forward(device: torch.device, batch_size: int, mc_samples: int) -> int:
    """All T copies in one call on a GPU; on a CPU large calls fall out of cache and run slower."""
    return batch_size * mc_samples if device.type == "cuda" else min(batch_size * mc_samples, 8)


def _mc_groups(
    model: nn.Module,
    images: Sequence[np.ndarray],
    mc_samples: int,
    batch_size: int,
    max_forward: int | None,
    sampling: str = "dropout",
) -> Iterator[tuple[list[int], torch.Tensor, torch.Tensor]]:
    """(indices, softmax samples (T, B, K, H, W) cropped to the group's own size, embeddings (B, D)) per
    group of same-shape images: in MC-dropout mode (dropout on, the rest in eval) for "dropout", in eval
    mode for "mirror"; modes restored after."""
    t = sample_count(mc_samples, sampling)
    dev = model_device(model)
    step = max_forward or default_max_forward(dev, batch_size, t)
    divisor = network_divisor(model)
    mode = mc_dropout(model) if sampling == "dropout" else eval_mode(model)
    with mode, torch.inference_mode():
        for idx in group_by_shape(images, batch_size):
            hw = images[idx[0]].shape[-2:]
            x = np.stack([pad_to_multiple(np.asarray(images[i], dtype=np.float32), divisor)[0] for i in idx])
            samples, emb = mc_forward(model, torch.from_numpy(x).to(dev), t, step, sampling)
            yield idx, samples[..., : hw[0], : hw[1]], emb


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode for the duration; every module's mode restored on exit."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        for m, mode in modes.items():
            m.train(mode)


def score_pool(
    model: nn.Module,
    images: Sequence[np.ndarray],
    *,
    mc_samples: int = 5,
    aggregation: str = "mean",
    topk_fraction: float = 0.1,
    batch_size: int = 16,
    device: torch.device | str | None = None,
    max_forward: int | None = None,
    sampling: str = "dropout",
) -> PoolScores:
    """Score every image; see the module contract. The model's train/eval modes are restored."""
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
    if mc_samples < 1 or not 0 < topk_fraction <= 1:
        raise ValueError("mc_samples must be >= 1 and topk_fraction in (0, 1]")
    if device is not None:
        model.to(device)
    if len(images) == 0:
        e = np.zeros(0, dtype=np.float32)
        return PoolScores(e, e, e, e, e, np.zeros((0, 0), np.float32), e, np.zeros((0, 0), np.float32), [])
    cols: dict[str, list[tuple[list[int], np.ndarray]]] = {}
    maps: list[np.ndarray | None] = [None] * len(images)
    for idx, samples, emb in _mc_groups(model, images, mc_samples, batch_size, max_forward, sampling):
        pu = pixel_uncertainty(samples)
        scores = _case_scores(pu, aggregation, topk_fraction) | {"embeddings": emb}
        for name, val in scores.items():
            cols.setdefault(name, []).append((idx, val.float().cpu().numpy()))
        k = samples.shape[2]
        umap = (pu.entropy / math.log(k) if k > 1 else torch.zeros_like(pu.entropy)).clamp(0.0, 1.0)
        for j, m in zip(idx, umap.float().cpu().numpy(), strict=True):
            maps[j] = np.ascontiguousarray(m)
    columns = {n: _in_order(parts, len(images)) for n, parts in cols.items()}
    return PoolScores(**columns, uncertainty_maps=[m for m in maps if m is not None])


def mc_predict_proba(
    model: nn.Module,
    images: Sequence[np.ndarray],
    *,
    mc_samples: int = 5,
    batch_size: int = 8,
    sampling: str = "dropout",
) -> list[np.ndarray]:
    """The predictive distribution scoring reads: the mean softmax (K, H, W) of the T samples per image (see
    the module contract), cropped to each image's size."""
    if mc_samples < 1:
        raise ValueError("mc_samples must be >= 1")
    out: list[np.ndarray | None] = [None] * len(images)
    for idx, samples, _emb in _mc_groups(model, images, mc_samples, batch_size, None, sampling):
        for j, m in zip(idx, samples.mean(dim=0).float().cpu().numpy(), strict=True):
            out[j] = np.ascontiguousarray(m)
    return [m for m in out if m is not None]


def _in_order(parts: list[tuple[list[int], np.ndarray]], n: int) -> np.ndarray:
    """Scatter per-group results back to input order."""
    first = parts[0][1]
    out = np.empty((n, *first.shape[1:]), dtype=np.float32)
    for idx, val in parts:
        out[idx] = val
    return out
