"""Inter-observer agreement of segmentation masks: overlap, surface distances, kappa, STAPLE, per case.

Masks are numpy label maps (2D or 3D), 0 = background; binary functions treat non-zero as foreground.
`spacing` is mm per axis (None = 1 mm isotropic) and is honoured by every distance.

Empty-mask conventions (never NaN or inf, so results go straight into JSON and statistics):
both empty -> Dice = IoU = surface Dice = 1.0, HD95 = ASSD = 0.0; exactly one empty -> Dice = IoU =
surface Dice = 0.0 and HD95 = ASSD = the image diagonal in mm, sqrt(sum((n_i * s_i)^2)).
The surface metrics live in `agreement_surface`, kappa in `agreement_kappa`, STAPLE and majority vote in
`agreement_consensus`; all are re-exported here.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from workers.ml.agreement.consensus import (
    StapleResult,
    foreground_labels,
    majority_vote,
    stack_masks,
    staple,
)
from workers.ml.agreement.kappa import (
    cohens_kappa,
    cohens_kappa_table,
    contingency,
    fleiss_kappa,
    fleiss_kappa_counts,
)
from workers.ml.agreement.surface import (
    SpacingLike,
    SurfaceDistances,
    SurfaceField,
    as_spacing,
    assd,
    binary_pair,
    crop_box,
    distances_from_fields,
    hausdorff95,
    surface_dice,
    surface_distances,
    surface_field,
)

__all__ = [
    "CaseAgreement",
    "ConsensusStats",
    "PairStats",
    "StapleResult",
    "SurfaceDistances",
    "assd",
    "case_agreement",
    "cohens_kappa",
    "cohens_kappa_table",
    "contingency",
    "dice",
    "dice_per_label",
    "fleiss_kappa",
    "fleiss_kappa_counts",
    "hausdorff95",
    "iou",
    "majority_vote",
    "pairwise_agreement",
    "staple",
    "surface_dice",
    "surface_distances",
]


def _dice_counts(a: np.ndarray, b: np.ndarray) -> float:
    size = int(a.sum() + b.sum())
    return 1.0 if size == 0 else 2.0 * int((a & b).sum()) / size


def _iou_counts(a: np.ndarray, b: np.ndarray) -> float:
    union = int((a | b).sum())
    return 1.0 if union == 0 else int((a & b).sum()) / union


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two binary masks (non-zero = foreground); both empty -> 1.0."""
    return _dice_counts(*binary_pair(a, b))


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union (Jaccard) of two binary masks; both empty -> 1.0."""
    return _iou_counts(*binary_pair(a, b))


def dice_per_label(a: np.ndarray, b: np.ndarray, labels: Iterable[int]) -> dict[int, float]:
    """Dice of `a == label` vs `b == label` for each label (a label absent from both -> 1.0)."""
    a, b = np.asarray(a), np.asarray(b)
    binary_pair(a, b)  # shape check
    return {int(lab): _dice_counts(a == lab, b == lab) for lab in labels}


@dataclass(frozen=True)
class PairStats:
    """Agreement of readers `reader_a` < `reader_b` (indices into the masks), mean over the case's labels."""

    reader_a: int
    reader_b: int
    dice: float
    iou: float
    hd95: float
    assd: float
    surface_dice: float


@dataclass(frozen=True)
class ConsensusStats:
    """One mask (a reader's or the model's) against the STAPLE consensus, mean over labels."""

    dice: float
    hd95: float


class _LabelFields:
    """Per-label binary crops and surface fields of named masks, computed once and shared by all pairs."""

    def __init__(self, masks: dict[str, np.ndarray], spacing: tuple[float, ...]) -> None:
        self._masks = masks
        self._spacing = spacing
        self._shape = next(iter(masks.values())).shape
        self._boxes: dict[int, tuple[slice, ...] | None] = {}
        self._cache: dict[tuple[str, int], tuple[np.ndarray, SurfaceField]] = {}

    def _box(self, label: int) -> tuple[slice, ...] | None:
        """One crop per label (around that label in every mask) keeps each distance transform small."""
        if label not in self._boxes:
            self._boxes[label] = crop_box([m == label for m in self._masks.values()])
        return self._boxes[label]

    def get(self, name: str, label: int) -> tuple[np.ndarray, SurfaceField]:
        key = (name, label)
        if key not in self._cache:
            mask, box = self._masks[name], self._box(label)
            binary = (mask[box] if box is not None else mask) == label
            self._cache[key] = (binary, surface_field(binary, self._spacing, None))
        return self._cache[key]

    def compare(self, a: str, b: str, labels: Sequence[int]) -> tuple[list[float], list[float], list[Any]]:
        """(dice, iou, surface distances) per label of masks `a` vs `b`."""
        dices, ious, dists = [], [], []
        for lab in labels:
            (ba, fa), (bb, fb) = self.get(a, lab), self.get(b, lab)
            dices.append(_dice_counts(ba, bb))
            ious.append(_iou_counts(ba, bb))
            dists.append(distances_from_fields(fa, fb, self._shape, self._spacing))
        return dices, ious, dists


def _mean(values: Sequence[float], empty: float) -> float:
    """Mean over labels; `empty` (the both-empty convention) when the case has no foreground label."""
    return float(np.mean(values)) if len(values) else empty


def _pair(fields: _LabelFields, i: int, j: int, labels: Sequence[int], tolerance_mm: float) -> PairStats:
    dices, ious, dists = fields.compare(f"r{i}", f"r{j}", labels)
    return PairStats(
        reader_a=i,
        reader_b=j,
        dice=_mean(dices, 1.0),
        iou=_mean(ious, 1.0),
        hd95=_mean([d.hd95() for d in dists], 0.0),
        assd=_mean([d.assd() for d in dists], 0.0),
        surface_dice=_mean([d.surface_dice(tolerance_mm) for d in dists], 1.0),
    )


def _vs_consensus(fields: _LabelFields, name: str, labels: Sequence[int]) -> ConsensusStats:
    dices, _, dists = fields.compare(name, "consensus", labels)
    return ConsensusStats(dice=_mean(dices, 1.0), hd95=_mean([d.hd95() for d in dists], 0.0))


def _reader_fields(
    stack: np.ndarray, spacing: tuple[float, ...], extra: dict[str, np.ndarray]
) -> _LabelFields:
    masks = {f"r{i}": stack[i] for i in range(stack.shape[0])}
    return _LabelFields({**masks, **extra}, spacing)


def pairwise_agreement(
    masks: Sequence[np.ndarray], spacing: SpacingLike = None, *, tolerance_mm: float = 1.0
) -> list[PairStats]:
    """Every reader pair (i < j): Dice, IoU, HD95, ASSD, surface Dice, each the mean over the labels
    present in any reader's mask (binary masks: the one foreground label). Needs 2+ masks of one shape."""
    stack = stack_masks(masks)
    sp = as_spacing(spacing, stack.ndim - 1)
    labels = foreground_labels(stack)
    fields = _reader_fields(stack, sp, {})
    pairs = itertools.combinations(range(stack.shape[0]), 2)
    return [_pair(fields, i, j, labels, tolerance_mm) for i, j in pairs]


@dataclass(frozen=True)
class CaseAgreement:
    """Everything the agreement report shows for one case. `consensus` (the STAPLE label map) is kept
    out of `to_dict()`; store it separately as a mask."""

    n_readers: int
    labels: tuple[int, ...]
    spacing: tuple[float, ...]
    tolerance_mm: float
    pairs: tuple[PairStats, ...]
    kappa: float
    kappa_method: str  # "cohen" for 2 readers, "fleiss" for 3+
    staple_sensitivity: tuple[float, ...]
    staple_specificity: tuple[float, ...]
    readers_vs_consensus: tuple[ConsensusStats, ...]
    model_vs_consensus: ConsensusStats | None
    model_within_reader_range: bool | None
    consensus: np.ndarray = field(repr=False, compare=False)

    @property
    def mean_pairwise_dice(self) -> float:
        return float(np.mean([p.dice for p in self.pairs]))

    @property
    def mean_pairwise_hd95(self) -> float:
        return float(np.mean([p.hd95 for p in self.pairs]))

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary (plain Python types only, no arrays)."""
        out = asdict(self)
        del out["consensus"]
        for key in ("labels", "spacing", "staple_sensitivity", "staple_specificity", "pairs"):
            out[key] = list(out[key])
        out["readers_vs_consensus"] = list(out["readers_vs_consensus"])
        out["mean_pairwise_dice"] = self.mean_pairwise_dice
        out["mean_pairwise_hd95"] = self.mean_pairwise_hd95
        return out


def _model_labels(model_mask: np.ndarray | None, shape: tuple[int, ...]) -> tuple[int, ...]:
    if model_mask is None:
        return ()
    if model_mask.shape != shape:
        raise ValueError(f"model mask shape {model_mask.shape} differs from readers' {shape}")
    return foreground_labels(model_mask[None])


def case_agreement(
    masks: Sequence[np.ndarray],
    spacing: SpacingLike = None,
    model_mask: np.ndarray | None = None,
    *,
    tolerance_mm: float = 1.0,
) -> CaseAgreement:
    """Agreement of 2+ readers on one case, and of the model with their STAPLE consensus.

    Reader metrics average over the labels the readers used; the model is compared with the consensus
    over those labels plus any label only the model used (so a spurious label costs the model).
    `model_within_reader_range` is True when the model's Dice vs consensus lies within [min, max] of
    the readers' Dice vs consensus (None without a model). Readers vs consensus is optimistic for the
    readers, as the consensus is built from them; it is still the fairest common reference.
    """
    stack = stack_masks(masks)
    sp = as_spacing(spacing, stack.ndim - 1)
    model = None if model_mask is None else np.asarray(model_mask).astype(np.int64)
    labels = foreground_labels(stack)
    model_labels = tuple(sorted(set(labels) | set(_model_labels(model, stack.shape[1:]))))
    consensus = staple(list(stack))
    extra = {"consensus": consensus.consensus} | ({} if model is None else {"model": model})
    fields = _reader_fields(stack, sp, extra)
    n = stack.shape[0]
    readers = tuple(_vs_consensus(fields, f"r{i}", labels) for i in range(n))
    model_stats = None if model is None else _vs_consensus(fields, "model", model_labels)
    within = None
    if model_stats is not None:
        within = min(r.dice for r in readers) <= model_stats.dice <= max(r.dice for r in readers)
    pairs = itertools.combinations(range(n), 2)
    return CaseAgreement(
        n_readers=n,
        labels=labels,
        spacing=sp,
        tolerance_mm=float(tolerance_mm),
        pairs=tuple(_pair(fields, i, j, labels, tolerance_mm) for i, j in pairs),
        kappa=cohens_kappa(stack[0], stack[1]) if n == 2 else fleiss_kappa(list(stack)),
        kappa_method="cohen" if n == 2 else "fleiss",
        staple_sensitivity=consensus.sensitivity,
        staple_specificity=consensus.specificity,
        readers_vs_consensus=readers,
        model_vs_consensus=model_stats,
        model_within_reader_range=within,
        consensus=consensus.consensus,
    )
