"""Reads of explanation quality reports."""

from django.db.models import QuerySet

from annotations.models import Project
from hitl.core.permissions import project_object_for_user
from hitl.core.types import User
from workers.models import ExplanationReport


def explanation_report_list(*, project: Project) -> QuerySet[ExplanationReport]:
    """Newest first, without the (large) result JSON: the list shows status and version only."""
    return (
        ExplanationReport.objects.filter(project=project)
        .select_related("requested_by", "model_version")
        .defer("result")
        .order_by("-created_at", "-id")
    )


def explanation_report_get_for_user(*, user: User, report_id: int) -> tuple[ExplanationReport, set[str]]:
    """The report and the caller's roles in its project; 404 for non-members, like a missing report."""
    report = (
        ExplanationReport.objects.select_related("project", "requested_by", "model_version")
        .filter(pk=report_id)
        .first()
    )
    return project_object_for_user(report, user=user, what="explanation report")
