"""Consensus of several readers' label masks: STAPLE (SimpleITK) and majority vote.

Masks are integer label maps of one shape (2D or 3D), 0 = background.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


def stack_masks(masks: Sequence[np.ndarray], min_readers: int = 2) -> np.ndarray:
    """Readers' masks stacked to (R, ...) integers. Raises ValueError on too few readers or mixed shapes."""
    arrays = [np.asarray(m) for m in masks]
    if len(arrays) < min_readers:
        raise ValueError(f"need at least {min_readers} masks, got {len(arrays)}")
    if len({a.shape for a in arrays}) != 1:
        raise ValueError(f"mask shapes differ: {[a.shape for a in arrays]}")
    if arrays[0].ndim not in (2, 3):
        raise ValueError(f"masks must be 2D or 3D, got {arrays[0].ndim}D")
    if not all(np.issubdtype(a.dtype, np.integer) or a.dtype == bool for a in arrays):
        raise ValueError("masks must be integer label maps")
    return np.stack(arrays).astype(np.int64, copy=False)


def present_labels(stack: np.ndarray) -> np.ndarray:
    """Sorted labels present anywhere in the integer array `stack` (0 included when present)."""
    flat = stack.ravel()
    if flat.size and flat.min() >= 0 and flat.max() < 65536:
        return np.flatnonzero(np.bincount(flat))  # several times faster than np.unique on label maps
    return np.unique(flat)


def foreground_labels(stack: np.ndarray) -> tuple[int, ...]:
    """Sorted non-zero labels present anywhere in `stack`."""
    return tuple(int(v) for v in present_labels(stack) if v != 0)


def majority_vote(masks: Sequence[np.ndarray]) -> np.ndarray:
    """Per-voxel plurality label (uint8 for labels < 256, else int64).

    A tie for the most votes gives background (0): with two readers who disagree there is no
    majority, and a consensus should not invent foreground.
    """
    stack = stack_masks(masks)
    labels = present_labels(stack)
    counts = np.stack([(stack == lab).sum(axis=0) for lab in labels])
    best = counts.max(axis=0)
    result = labels[counts.argmax(axis=0)]
    result[(counts == best).sum(axis=0) > 1] = 0
    dtype = np.uint8 if labels.max() < 256 else np.int64
    return result.astype(dtype)


@dataclass(frozen=True)
class StapleResult:
    """STAPLE consensus and reader performance.

    `consensus`: label map (uint8 for labels < 256); `probability`: float32 map of the consensus probability of the
    winning label (binary: the foreground probability); `sensitivity` / `specificity`: one value per
    reader, the mean over `labels` for multi-label input; `per_label_*`: reader values per label.
    """

    consensus: np.ndarray
    probability: np.ndarray
    sensitivity: tuple[float, ...]
    specificity: tuple[float, ...]
    labels: tuple[int, ...]
    per_label_sensitivity: dict[int, tuple[float, ...]] = field(default_factory=dict)
    per_label_specificity: dict[int, tuple[float, ...]] = field(default_factory=dict)


def _staple_binary(
    binaries: np.ndarray, max_iterations: int, confidence_weight: float
) -> tuple[np.ndarray, tuple[float, ...], tuple[float, ...]]:
    """One STAPLE run over (R, ...) 0/1 masks -> (probability map, sensitivity, specificity).

    When every reader drew the same mask STAPLE has nothing to estimate (ITK returns NaN if that mask
    is empty): the mask itself is the consensus and every reader is perfect (1.0, 1.0).
    """
    import SimpleITK as sitk

    if (binaries == binaries[0]).all():
        n = binaries.shape[0]
        return binaries[0].astype(np.float64), (1.0,) * n, (1.0,) * n
    images = [sitk.GetImageFromArray(b.astype(np.uint8)) for b in binaries]
    flt = sitk.STAPLEImageFilter()
    flt.SetForegroundValue(1)
    flt.SetMaximumIterations(max_iterations)
    flt.SetConfidenceWeight(confidence_weight)
    prob = sitk.GetArrayFromImage(flt.Execute(images))
    sens = tuple(float(v) for v in flt.GetSensitivity())
    spec = tuple(float(v) for v in flt.GetSpecificity())
    return np.nan_to_num(prob, nan=0.0), sens, spec


def staple(
    masks: Sequence[np.ndarray],
    *,
    threshold: float = 0.5,
    max_iterations: int = 100,
    confidence_weight: float = 1.0,
) -> StapleResult:
    """STAPLE consensus (Warfield et al. 2004) via SimpleITK `STAPLEImageFilter`.

    Binary input: one STAPLE run; consensus = foreground probability >= `threshold`.
    Multi-label input: one binary STAPLE run per label (that label vs the rest); each voxel takes the
    label with the highest probability if that probability is >= `threshold`, else background. (Chosen
    over `MultiLabelSTAPLEImageFilter` because it reports per-reader sensitivity and specificity per
    label, which the agreement report needs.) No foreground anywhere gives an empty consensus and
    perfect readers. Needs at least 2 readers.
    """
    stack = stack_masks(masks)
    labels = foreground_labels(stack)
    n = stack.shape[0]
    if not labels:
        empty = np.zeros(stack.shape[1:], dtype=np.uint8)
        return StapleResult(empty, empty.astype(np.float32), (1.0,) * n, (1.0,) * n, ())
    probs, sens, spec = [], {}, {}
    for lab in labels:
        p, sens[lab], spec[lab] = _staple_binary(stack == lab, max_iterations, confidence_weight)
        probs.append(p)
    prob_stack = np.stack(probs)
    best = prob_stack.argmax(axis=0)
    best_prob = np.take_along_axis(prob_stack, best[None], axis=0)[0]
    dtype = np.uint8 if labels[-1] < 256 else np.int64
    consensus = np.where(best_prob >= threshold, np.asarray(labels)[best], 0).astype(dtype)
    return StapleResult(
        consensus=consensus,
        probability=best_prob.astype(np.float32),
        sensitivity=tuple(float(np.mean([sens[lab][r] for lab in labels])) for r in range(n)),
        specificity=tuple(float(np.mean([spec[lab][r] for lab in labels])) for r in range(n)),
        labels=labels,
        per_label_sensitivity=sens,
        per_label_specificity=spec,
    )
