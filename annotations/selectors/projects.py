from django.db.models import Count, QuerySet
from rest_framework.exceptions import NotFound

from annotations.models import AuditEvent, Membership, Project
from annotations.permissions import user_roles


def project_list_for_user(*, user) -> QuerySet[Project]:
    qs = (
        Project.objects.all()
        if user.is_superuser
        else Project.objects.filter(memberships__user=user).distinct()
    )
    return qs.annotate(
        num_images=Count("images", distinct=True), num_cases=Count("cases", distinct=True)
    ).order_by("id")


def project_get_for_user(*, user, project_id: int) -> tuple[Project, set[str]]:
    """The project and the caller's roles in it. Non-members get 404, exactly like a missing project."""
    project = Project.objects.filter(pk=project_id).first()
    if project is None:
        raise NotFound("project not found")
    roles = user_roles(user, project)
    if not roles:
        raise NotFound("project not found")
    return project, roles


def membership_list(*, project: Project) -> QuerySet[Membership]:
    return project.memberships.select_related("user").order_by("user__username", "role")


def audit_list(*, project: Project) -> QuerySet[AuditEvent]:
    return AuditEvent.objects.filter(project=project).select_related("actor").order_by("-at", "-id")
