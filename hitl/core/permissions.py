"""Who may do what. Every API view resolves the project through `project_get_for_user` (404 for
non-members, so other projects' existence never leaks) and then calls `require` (403 for a member whose
roles do not allow the action)."""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from django.db import models
from rest_framework.exceptions import NotFound, PermissionDenied

if TYPE_CHECKING:  # imported by the models modules: the user model may not be loaded yet
    from hitl.core.types import User


class Role(models.TextChoices):
    """A user's roles in a project (annotations.Membership); every permission below is stated in them."""

    ANNOTATOR = "annotator", "Annotator"
    ML_ENGINEER = "ml_engineer", "ML engineer"
    DATA_MANAGER = "data_manager", "Data manager"
    ADMIN = "admin", "Admin"


class Action(StrEnum):
    VIEW = "view"
    UPDATE_PROJECT = "update_project"
    MANAGE_MEMBERS = "manage_members"
    IMPORT_IMAGES = "import_images"
    SET_READERS = "set_readers"
    SET_TRAINING = "set_training"
    ANNOTATE = "annotate"
    TRAIN = "train"
    EXPORT = "export"
    VIEW_AUDIT = "view_audit"
    ADJUDICATE = "adjudicate"


ALL_ROLES = frozenset(Role.values)

ALLOWED: dict[Action, frozenset[str]] = {
    Action.VIEW: ALL_ROLES,
    Action.UPDATE_PROJECT: frozenset({Role.ADMIN}),
    Action.MANAGE_MEMBERS: frozenset({Role.ADMIN}),
    Action.IMPORT_IMAGES: frozenset({Role.DATA_MANAGER, Role.ADMIN}),
    Action.SET_READERS: frozenset({Role.DATA_MANAGER, Role.ADMIN}),
    Action.SET_TRAINING: frozenset({Role.ML_ENGINEER, Role.ADMIN}),
    Action.ANNOTATE: frozenset({Role.ANNOTATOR}),
    Action.TRAIN: frozenset({Role.ML_ENGINEER, Role.ADMIN}),
    Action.EXPORT: frozenset({Role.DATA_MANAGER, Role.ADMIN}),
    Action.VIEW_AUDIT: frozenset({Role.ADMIN}),
    Action.ADJUDICATE: frozenset({Role.ADMIN}),
}


def allows(roles: set[str], action: Action) -> bool:
    return bool(roles & ALLOWED[action])


def reads_blind(roles: set[str]) -> bool:
    """A user who is only an annotator in the project reads blind: they see the cases the queue gave them,
    never the rest of the project (nor other readers' masks)."""
    return not roles - {Role.ANNOTATOR}


def require(roles: set[str], action: Action) -> None:
    if not allows(roles, action):
        raise PermissionDenied(f"your role in this project does not allow: {action.value.replace('_', ' ')}")


def user_roles(user: User, project: Any) -> set[str]:
    """Roles of `user` in `project`; site superusers act as project admins everywhere."""
    roles = set(project.memberships.filter(user=user).values_list("role", flat=True))
    if user.is_superuser:
        roles.add(Role.ADMIN)
    return roles


class _InProject(Protocol):
    project: Any  # an annotations.Project


T = TypeVar("T", bound=_InProject)


def project_object_for_user(obj: T | None, *, user: User, what: str) -> tuple[T, set[str]]:
    """`obj` (looked up by id, None when missing) and the caller's roles in its project. A missing object
    and one in a project the caller is not a member of are the same 404, so ids never leak across
    projects."""
    roles = user_roles(user, obj.project) if obj is not None else set()
    if obj is None or not roles:
        raise NotFound(f"{what} not found")
    return obj, roles
