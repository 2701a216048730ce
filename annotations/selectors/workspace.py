"""Reads for the workspace pages: a reader's own running numbers."""

import statistics

from annotations.models import Annotation, AnnotationKind, Assignment, AssignmentStatus, Project
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


def recent_cases(*, project: Project, reader: User, limit: int = 20) -> list[dict]:
    """The cases the reader submitted in this project, newest first, each with the reader's latest revision
    of it (what "my recent cases" reopens). Two queries."""
    submitted = list(
        Assignment.objects.filter(project=project, reader=reader, status=AssignmentStatus.SUBMITTED)
        .select_related("case__image")
        .order_by("-finished_at", "-id")[:limit]
    )
    latest: dict[int, int] = {}
    rows = Annotation.objects.filter(
        case_id__in=[a.case_id for a in submitted], author=reader, kind=AnnotationKind.READER
    ).values_list("case_id", "revision")
    for case_id, revision in rows:
        latest[case_id] = max(revision, latest.get(case_id, 0))
    return [
        {
            "case": a.case_id,
            "image_name": a.case.image.display_name,
            "slice_index": a.case.slice_index,
            "submitted_at": a.finished_at,
            "my_latest_revision": latest.get(a.case_id),
            "flagged": a.case.flagged_at is not None,
        }
        for a in submitted
    ]
