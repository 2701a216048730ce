"""Segmentation metrics over a set of cases that do not reward predicting nothing.

A per-case Dice that scores 1.0 when a class is absent from both prediction and truth, averaged over
cases, lets an empty predictor score high on sparse data (most slices empty). Here, per foreground class:

- ``pooled_dice``: Dice over every pixel of the set at once, 2 sum|P&T| / (sum|P| + sum|T|). An empty
  predictor scores 0 wherever the class exists; a class found in neither prediction nor truth anywhere is
  undefined (None) and left out of the mean, never counted as 1.0.
- ``case_dice``: the mean Dice over the cases whose truth contains the class (how well each structure is
  found when it is there).
- ``fp_fraction_empty``: predicted pixels of the class on cases whose truth has none of it, as a share of
  those cases' pixels (what a reader would have to erase on an empty case).

``SetMetrics.dice`` (the mean pooled Dice over the defined classes) is what early stopping, gating, the
learning curve and the simulation compare.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

METRIC_NAME = "pooled_dice"  # recorded beside every stored figure: figures of other metrics do not compare


@dataclass(frozen=True)
class ClassMetrics:
    label: int
    pooled_dice: float | None
    case_dice: float | None
    cases_with_class: int
    fp_pixels_empty: int
    empty_pixels: int

    @property
    def fp_fraction_empty(self) -> float | None:
        return self.fp_pixels_empty / self.empty_pixels if self.empty_pixels else None


@dataclass(frozen=True)
class SetMetrics:
    classes: tuple[ClassMetrics, ...]  # foreground classes 1..K-1
    cases: int

    @property
    def dice(self) -> float:
        """Mean pooled Dice over the classes it is defined for; NaN when none is (nothing anywhere)."""
        values = [c.pooled_dice for c in self.classes if c.pooled_dice is not None]
        return float(np.mean(values)) if values else float("nan")

    def to_dict(self) -> dict:
        return {
            "metric": METRIC_NAME,
            "dice": None if np.isnan(self.dice) else self.dice,
            "cases": self.cases,
            "classes": [{**asdict(c), "fp_fraction_empty": c.fp_fraction_empty} for c in self.classes],
        }


def _confusion(pred: np.ndarray, truth: np.ndarray, k: int) -> np.ndarray:
    """conf[p, t]: pixels predicted p whose truth is t."""
    if pred.shape != truth.shape:
        raise ValueError(f"prediction {pred.shape} and truth {truth.shape} differ in shape")
    flat = np.clip(pred.astype(np.int64).ravel(), 0, k - 1) * k + truth.astype(np.int64).ravel()
    return np.bincount(flat, minlength=k * k)[: k * k].reshape(k, k)


def set_metrics(preds: Sequence[np.ndarray], truths: Sequence[np.ndarray], num_classes: int) -> SetMetrics:
    """Metrics of label maps `preds` against `truths` (same shapes pairwise; truth values < num_classes).
    One pass over the cases; memory is one K x K table per case."""
    if len(preds) != len(truths):
        raise ValueError(f"{len(preds)} predictions but {len(truths)} truths")
    k = num_classes
    fg = k - 1
    inter, p_size, t_size = np.zeros(fg), np.zeros(fg), np.zeros(fg)
    case_sum, case_n = np.zeros(fg), np.zeros(fg, dtype=np.int64)
    fp_empty, empty_px = np.zeros(fg, dtype=np.int64), np.zeros(fg, dtype=np.int64)
    for pred, truth in zip(preds, truths, strict=True):
        conf = _confusion(np.asarray(pred), np.asarray(truth), k)
        i, p, t = np.diag(conf)[1:], conf.sum(axis=1)[1:], conf.sum(axis=0)[1:]
        inter, p_size, t_size = inter + i, p_size + p, t_size + t
        present = t > 0
        case_sum[present] += 2.0 * i[present] / (p[present] + t[present])
        case_n += present
        fp_empty[~present] += p[~present]
        empty_px[~present] += int(np.asarray(truth).size)
    classes = tuple(
        ClassMetrics(
            label=c + 1,
            pooled_dice=float(2.0 * inter[c] / (p_size[c] + t_size[c])) if p_size[c] + t_size[c] else None,
            case_dice=float(case_sum[c] / case_n[c]) if case_n[c] else None,
            cases_with_class=int(case_n[c]),
            fp_pixels_empty=int(fp_empty[c]),
            empty_pixels=int(empty_px[c]),
        )
        for c in range(fg)
    )
    return SetMetrics(classes=classes, cases=len(preds))


@dataclass(frozen=True)
class Calibration:
    """Expected calibration error of pixel-wise confidence (the arg-max class's probability): the
    pixel-weighted mean |accuracy - confidence| over `bins` equal-width confidence bins. `ece` counts every
    pixel (background dominates); `ece_foreground` only pixels that the truth or the prediction labels, where
    a reader looks."""

    ece: float
    ece_foreground: float | None
    pixels: int

    def to_dict(self) -> dict:
        return asdict(self)


def _ece(confidence: np.ndarray, correct: np.ndarray, bins: int) -> float:
    edges = np.minimum((confidence * bins).astype(np.int64), bins - 1)
    total = np.bincount(edges, minlength=bins)
    conf_sum = np.bincount(edges, weights=confidence, minlength=bins)
    acc_sum = np.bincount(edges, weights=correct, minlength=bins)
    return float(np.abs(acc_sum - conf_sum).sum() / max(int(total.sum()), 1))


def calibration(probs: Sequence[np.ndarray], truths: Sequence[np.ndarray], bins: int = 15) -> Calibration:
    """`probs`: softmax (K, H, W) per case; `truths`: (H, W) label maps."""
    conf, corr, fg_conf, fg_corr = [], [], [], []
    for p, t in zip(probs, truths, strict=True):
        p, t = np.asarray(p, dtype=np.float64), np.asarray(t)
        pred = p.argmax(axis=0)
        c = p.max(axis=0).ravel()
        ok = (pred == t).ravel().astype(np.float64)
        fg = ((pred > 0) | (t > 0)).ravel()
        conf.append(c)
        corr.append(ok)
        fg_conf.append(c[fg])
        fg_corr.append(ok[fg])
    all_c, all_ok = np.concatenate(conf), np.concatenate(corr)
    f_c, f_ok = np.concatenate(fg_conf), np.concatenate(fg_corr)
    return Calibration(
        ece=_ece(all_c, all_ok, bins),
        ece_foreground=_ece(f_c, f_ok, bins) if f_c.size else None,
        pixels=int(all_c.size),
    )
