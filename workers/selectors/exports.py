"""Reads for exports: which revisions a request selects, and the jobs a user may see."""

from __future__ import annotations

import datetime

from django.db.models import QuerySet

from annotations.models import Annotation, AnnotationKind, Case, Project
from hitl.core.permissions import project_object_for_user
from hitl.core.types import User
from workers.models import ExportJob, ExportLabels


def export_revision_ids(
    *,
    project: Project,
    labels: str,
    splits: list[str] | None = None,
    date_from: datetime.date | None = None,
    date_to: datetime.date | None = None,
    reader_ids: list[int] | None = None,
    model_version_ids: list[int] | None = None,
) -> list[int]:
    """Revision ids in (case, revision) order. latest = each case's current revision (the pointer);
    consensus = each case's newest adjudicated revision, else its newest consensus; all = every revision.
    Filters apply to the revisions themselves (dates inclusive, in the server's time zone)."""
    qs = Annotation.objects.filter(case__project=project)
    if splits:
        qs = qs.filter(case__split__in=splits)
    if date_from:
        qs = qs.filter(created_at__date__gte=date_from)
    if date_to:
        qs = qs.filter(created_at__date__lte=date_to)
    if reader_ids:
        qs = qs.filter(author_id__in=reader_ids)
    if model_version_ids:
        qs = qs.filter(proposal_model_version_id__in=model_version_ids)
    if labels == ExportLabels.LATEST:
        current = Case.objects.filter(project=project, current_annotation__isnull=False)
        qs = qs.filter(pk__in=current.values("current_annotation_id"))
    elif labels == ExportLabels.CONSENSUS:
        qs = qs.filter(kind__in=[AnnotationKind.CONSENSUS, AnnotationKind.ADJUDICATED])
    if labels != ExportLabels.CONSENSUS:
        return list(qs.order_by("case_id", "revision").values_list("pk", flat=True))
    # per case: the newest adjudicated revision (an admin's decision), else the newest consensus
    newest: dict[int, tuple[bool, int, int]] = {}
    for case_id, pk, kind, revision in qs.values_list("case_id", "pk", "kind", "revision"):
        key = (kind == AnnotationKind.ADJUDICATED, revision, pk)
        newest[case_id] = max(newest.get(case_id, key), key)
    return [newest[c][2] for c in sorted(newest)]


def export_job_list(*, project: Project) -> QuerySet[ExportJob]:
    return ExportJob.objects.filter(project=project).select_related("project").order_by("-created_at", "-id")


def export_job_get_for_user(*, user: User, job_id: int) -> tuple[ExportJob, set[str]]:
    """The job and the caller's roles in its project; 404 for a missing job and for non-members alike."""
    job = ExportJob.objects.select_related("project").filter(pk=job_id).first()
    return project_object_for_user(job, user=user, what="export")
