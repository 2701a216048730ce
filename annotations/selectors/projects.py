from django.core.exceptions import PermissionDenied
from django.db.models import Count, QuerySet
from django.http import Http404
from rest_framework.exceptions import NotFound

from annotations.models import Membership, Project
from hitl.core.models import AuditEvent
from hitl.core.permissions import Action, allows, user_roles
from hitl.core.types import User


def project_list_for_user(*, user: User) -> QuerySet[Project]:
    qs = (
        Project.objects.all()
        if user.is_superuser
        else Project.objects.filter(memberships__user=user).distinct()
    )
    return qs.annotate(
        num_images=Count("images", distinct=True), num_cases=Count("cases", distinct=True)
    ).order_by("id")


def project_get_for_user(*, user: User, project_id: int) -> tuple[Project, set[str]]:
    """The project and the caller's roles in it. Non-members get 404, exactly like a missing project.
    One query for members (their memberships with the project joined): every project-scoped request,
    the reader's claim included, starts here."""
    if user.is_superuser:
        project = Project.objects.filter(pk=project_id).first()
        if project is None:
            raise NotFound("project not found")
        return project, user_roles(user, project)
    memberships = list(
        Membership.objects.filter(project_id=project_id, user=user).select_related("project").order_by()
    )
    if not memberships:
        raise NotFound("project not found")
    return memberships[0].project, {m.role for m in memberships}


def membership_list(*, project: Project) -> QuerySet[Membership]:
    return project.memberships.select_related("user").order_by("user__username", "role")


def audit_list(*, project: Project) -> QuerySet[AuditEvent]:
    return AuditEvent.objects.filter(project=project).select_related("actor").order_by("-at", "-id")


def project_for_page(*, user: User, project_id: int, action: Action) -> tuple[Project, set[str]]:
    """`project_get_for_user` for a server-rendered page: 404 for non-members, 403 for a member whose roles
    do not allow `action`."""
    try:
        project, roles = project_get_for_user(user=user, project_id=project_id)
    except NotFound as exc:
        raise Http404("project not found") from exc
    if not allows(roles, action):
        raise PermissionDenied(f"your role in this project does not allow: {action.value.replace('_', ' ')}")
    return project, roles
