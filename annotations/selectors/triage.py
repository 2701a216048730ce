"""What needs a data manager's eye: flagged cases (out of the queue) and skipped readings, with the reasons
readers gave (free text kept on the lease, shown to data managers and admins only)."""

from annotations.models import Assignment, AssignmentStatus, Project


def _row(a: Assignment) -> dict:
    return {
        "case": a.case_id,
        "image_name": a.case.image.display_name,
        "slice_index": a.case.slice_index,
        "reader": a.reader.username,
        "reason": a.reason,
        "at": a.finished_at,
        "still_flagged": a.case.flagged_at is not None,
    }


def flagged_and_skipped(*, project: Project, limit: int = 100) -> dict[str, list[dict]]:
    """The newest `limit` flags of cases still flagged, and the newest `limit` skips. Two queries."""
    base = Assignment.objects.filter(project=project).select_related("case__image", "reader")
    flagged = base.filter(status=AssignmentStatus.FLAGGED, case__flagged_at__isnull=False)
    skipped = base.filter(status=AssignmentStatus.SKIPPED)
    return {
        "flagged": [_row(a) for a in flagged.order_by("-finished_at", "-id")[:limit]],
        "skipped": [_row(a) for a in skipped.order_by("-finished_at", "-id")[:limit]],
    }
