"""Reads for agreement statistics and dashboards.

Blind reading: annotators see project-level agreement and only their own per-reader numbers; ML engineers,
data managers and admins see every reader (`sees_all_readers`). Statistics use each case's newest agreement
row (its current readers)."""

import statistics
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from django.db.models import Count, OuterRef, Prefetch, QuerySet, Subquery

from annotations.models import Agreement, Annotation, AnnotationKind, Case, Project, ReaderAgreement, Role
from hitl.core.types import User

DICE_BINS = 10  # histogram of pairwise Dice over [0, 1]
TREND_WINDOW = 5  # rolling mean of a reader's Dice vs consensus, over this many reads


def sees_all_readers(roles: set[str]) -> bool:
    return bool(roles - {Role.ANNOTATOR})


def bootstrap_ci(
    values: list[float], *, level: float = 0.95, n_resamples: int = 2000, seed: int = 0
) -> tuple[float, float] | None:
    """Percentile bootstrap confidence interval of the mean (seeded: the same data gives the same
    interval). None without data; a single value gives a zero-width interval."""
    if not values:
        return None
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 1:
        return float(arr[0]), float(arr[0])
    rng = np.random.default_rng(seed)
    means = arr[rng.integers(0, arr.size, size=(n_resamples, arr.size))].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def _latest_ids(project: Project) -> Subquery:
    newest = Agreement.objects.filter(case=OuterRef("case")).order_by("-computed_at", "-id").values("id")[:1]
    return Subquery(newest)


def agreements_latest(*, project: Project) -> QuerySet[Agreement]:
    """Each case's newest agreement, with case, image, consensus and reader rows joined."""
    return (
        Agreement.objects.filter(project=project, id=_latest_ids(project))
        .select_related("case__image", "consensus", "model_version")
        .prefetch_related(
            Prefetch(
                "readers", queryset=ReaderAgreement.objects.select_related("reader").order_by("reader_id")
            )
        )
        .order_by("mean_pairwise_dice", "case_id")
    )


def agreement_for_case(*, case: Case) -> Agreement | None:
    return (
        Agreement.objects.filter(case=case)
        .select_related("case__image", "consensus", "model_version")
        .prefetch_related(
            Prefetch(
                "readers", queryset=ReaderAgreement.objects.select_related("reader").order_by("reader_id")
            )
        )
        .order_by("-computed_at", "-id")
        .first()
    )


def reader_rows_visible(*, agreement: Agreement, user: User, roles: set[str]) -> list[ReaderAgreement]:
    rows = list(agreement.readers.all())
    return rows if sees_all_readers(roles) else [r for r in rows if r.reader_id == user.pk]


@dataclass
class ReaderStats:
    reader_id: int
    username: str
    cases_read: int
    median_time_s: float | None
    dice_cases: int  # multi-reader cases with a consensus, the base of the Dice statistics
    mean_dice: float | None
    dice_ci: tuple[float, float] | None
    mean_sensitivity: float | None
    mean_specificity: float | None
    trend: list[dict[str, Any]] = field(default_factory=list)  # [{"read_at", "dice", "rolling"}]


def _reader_times(project: Project, reader_ids: set[int] | None) -> dict[int, tuple[str, int, list[float]]]:
    """reader id -> (username, distinct cases read, time spent per submission)."""
    qs = Annotation.objects.filter(case__project=project, kind=AnnotationKind.READER)
    if reader_ids is not None:
        qs = qs.filter(author_id__in=reader_ids)
    out: dict[int, tuple[str, int, list[float]]] = {}
    for row in qs.values("author_id", "author__username").annotate(cases=Count("case", distinct=True)):
        out[row["author_id"]] = (row["author__username"], row["cases"], [])
    for author_id, t in qs.values_list("author_id", "time_spent_s"):
        out[author_id][2].append(float(t))
    return out


def reader_stats(*, project: Project, reader_ids: set[int] | None = None) -> list[ReaderStats]:
    """Per reader: cases read, median time per submission, Dice vs consensus (mean, bootstrap 95% CI),
    STAPLE sensitivity/specificity and the Dice trend over time. `reader_ids` None = every reader."""
    rows = ReaderAgreement.objects.filter(project=project, agreement_id=_latest_ids_for_rows(project))
    if reader_ids is not None:
        rows = rows.filter(reader_id__in=reader_ids)
    by_reader: dict[int, list[tuple[datetime, float, float, float]]] = {}
    for reader_id, read_at, dice, sens, spec in rows.order_by("read_at", "id").values_list(
        "reader_id", "read_at", "dice_vs_consensus", "sensitivity", "specificity"
    ):
        by_reader.setdefault(reader_id, []).append((read_at, dice, sens, spec))
    out = []
    for reader_id, (username, cases, times) in sorted(_reader_times(project, reader_ids).items()):
        points = by_reader.get(reader_id, [])
        dices = [p[1] for p in points]
        trend = [
            {
                "read_at": p[0].isoformat(),
                "dice": p[1],
                "rolling": float(np.mean(dices[max(0, i - TREND_WINDOW + 1) : i + 1])),
            }
            for i, p in enumerate(points)
        ]
        out.append(
            ReaderStats(
                reader_id=reader_id,
                username=username,
                cases_read=cases,
                median_time_s=statistics.median(times) if times else None,
                dice_cases=len(dices),
                mean_dice=float(np.mean(dices)) if dices else None,
                dice_ci=bootstrap_ci(dices),
                mean_sensitivity=float(np.mean([p[2] for p in points])) if points else None,
                mean_specificity=float(np.mean([p[3] for p in points])) if points else None,
                trend=trend,
            )
        )
    return out


def _latest_ids_for_rows(project: Project):
    """Reader rows of each case's newest agreement only (older rows describe replaced revisions)."""
    newest = Agreement.objects.filter(case=OuterRef("agreement__case")).order_by("-computed_at", "-id")
    return Subquery(newest.values("id")[:1])


@dataclass
class ProjectStats:
    cases_with_agreement: int
    pairwise_dice: list[float]
    dice_histogram: list[int]  # DICE_BINS counts over [0, 1]
    mean_pairwise_dice: float | None
    median_pairwise_dice: float | None
    mean_kappa: float | None
    disputed: list[Agreement]  # lowest mean pairwise Dice first
    model_cases: int  # cases with a model proposal compared
    model_within_spread: int
    mean_model_dice: float | None
    mean_reader_dice: float | None


def project_stats(*, project: Project, disputed_limit: int = 10) -> ProjectStats:
    agreements = list(agreements_latest(project=project))
    pairs = [float(p["dice"]) for a in agreements for p in a.metrics.get("pairs", [])]
    hist = np.histogram(pairs, bins=DICE_BINS, range=(0.0, 1.0))[0] if pairs else np.zeros(DICE_BINS)
    with_model = [a for a in agreements if a.model_dice_vs_consensus is not None]
    reader_dice = [r.dice_vs_consensus for a in agreements for r in a.readers.all()]
    return ProjectStats(
        cases_with_agreement=len(agreements),
        pairwise_dice=pairs,
        dice_histogram=[int(c) for c in hist],
        mean_pairwise_dice=float(np.mean(pairs)) if pairs else None,
        median_pairwise_dice=float(np.median(pairs)) if pairs else None,
        mean_kappa=float(np.mean([a.kappa for a in agreements])) if agreements else None,
        disputed=agreements[:disputed_limit],
        model_cases=len(with_model),
        model_within_spread=sum(1 for a in with_model if a.model_within_spread),
        mean_model_dice=float(np.mean([a.model_dice_vs_consensus for a in with_model]))
        if with_model
        else None,
        mean_reader_dice=float(np.mean(reader_dice)) if reader_dice else None,
    )


def agreement_csv_rows(*, project: Project, kind: str, reader_ids: set[int] | None) -> list[list[Any]]:
    """Rows (header first) of the agreement CSV: one per case ("cases") or per reader and case ("readers";
    limited to `reader_ids` unless None)."""
    agreements = list(agreements_latest(project=project).order_by("case_id"))
    if kind == "readers":
        rows: list[list[Any]] = [
            [
                "case_id",
                "reader",
                "annotation_id",
                "dice_vs_consensus",
                "hd95_vs_consensus_mm",
                "sensitivity",
                "specificity",
                "time_spent_s",
                "read_at",
            ]
        ]
        for a in agreements:
            for r in a.readers.all():
                if reader_ids is None or r.reader_id in reader_ids:
                    rows.append(
                        [
                            a.case_id,
                            r.reader.username,
                            r.annotation_id,
                            r.dice_vs_consensus,
                            r.hd95_vs_consensus,
                            r.sensitivity,
                            r.specificity,
                            r.time_spent_s,
                            r.read_at.isoformat(),
                        ]
                    )
        return rows
    rows = [
        [
            "case_id",
            "image_id",
            "slice_index",
            "n_readers",
            "mean_pairwise_dice",
            "mean_pairwise_hd95_mm",
            "kappa",
            "kappa_method",
            "consensus_annotation_id",
            "consensus_revision",
            "model_version_id",
            "model_dice_vs_consensus",
            "model_within_spread",
            "computed_at",
        ]
    ]
    for a in agreements:
        rows.append(
            [
                a.case_id,
                a.case.image_id,
                a.case.slice_index,
                a.n_readers,
                a.mean_pairwise_dice,
                a.mean_pairwise_hd95,
                a.kappa,
                a.kappa_method,
                a.consensus_id,
                a.consensus.revision,
                a.model_version_id,
                a.model_dice_vs_consensus,
                a.model_within_spread,
                a.computed_at.isoformat(),
            ]
        )
    return rows
