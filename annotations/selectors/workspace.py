"""Reads for the workspace pages: a reader's own running numbers."""

import statistics

from annotations.models import Annotation, AnnotationKind, Project
from annotations.selectors.agreement import reader_stats as agreement_reader_stats
from hitl.core.types import User


def reader_progress(*, project: Project, reader: User) -> dict:
    """The reader's own running numbers in this project: cases done and median time per case (seconds)."""
    times = list(
        Annotation.objects.filter(case__project=project, author=reader, kind=AnnotationKind.READER)
        .order_by()
        .values_list("time_spent_s", flat=True)
    )
    return {
        "cases_done": len(times),
        "median_time_s": round(statistics.median(times), 1) if times else None,
        "times": [round(t, 1) for t in times[-200:]],
        "agreement": _own_agreement(project=project, reader=reader),
    }


def _own_agreement(*, project: Project, reader: User) -> dict | None:
    """Mean Dice vs the STAPLE consensus on the reader's multi-read cases, with its bootstrap 95% CI."""
    rows = agreement_reader_stats(project=project, reader_ids={reader.pk})
    if not rows or rows[0].mean_dice is None:
        return None
    row = rows[0]
    return {
        "mean_dice": row.mean_dice,
        "ci": list(row.dice_ci) if row.dice_ci else None,
        "cases": row.dice_cases,
    }
