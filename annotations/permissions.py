"""Who may do what. Every API view resolves the project through `project_get_for_user` (404 for
non-members, so other projects' existence never leaks) and then calls `require` (403 for a member whose
roles do not allow the action)."""

from enum import StrEnum

from rest_framework.exceptions import PermissionDenied

from annotations.models import Project, Role


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
}


def allows(roles: set[str], action: Action) -> bool:
    return bool(roles & ALLOWED[action])


def require(roles: set[str], action: Action) -> None:
    if not allows(roles, action):
        raise PermissionDenied(f"your role in this project does not allow: {action.value.replace('_', ' ')}")


def user_roles(user, project: Project) -> set[str]:
    """Roles of `user` in `project`; site superusers act as project admins everywhere."""
    roles = set(project.memberships.filter(user=user).values_list("role", flat=True))
    if user.is_superuser:
        roles.add(Role.ADMIN)
    return roles
