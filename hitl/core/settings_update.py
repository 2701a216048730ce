"""A partial update of settings that belong to a project (the project's own, or its training settings): the
same rules for both. Each field needs its action (403 otherwise, before any value is looked at), an empty
change is refused, values are validated by the model (`full_clean`), only the changed fields are saved, and
the audit trail records which fields changed (never their values)."""

from collections.abc import Mapping
from typing import Any

from django.core.exceptions import ValidationError
from django.db import models

from hitl.core.audit import audit_record
from hitl.core.permissions import Action, allows
from hitl.core.types import User


def settings_changes_check(
    *, changes: Mapping[str, Any], field_actions: Mapping[str, Action], roles: set[str]
) -> None:
    """ValidationError for an empty change or a field that cannot be changed; PermissionError (HTTP 403)
    for a field none of `roles` may change."""
    if not changes:
        raise ValidationError({"detail": "send at least one setting to change"})
    for field in changes:
        action = field_actions.get(field)
        if action is None:
            raise ValidationError({field: "this setting cannot be changed"})
        if not allows(roles, action):
            raise PermissionError(f"your role does not allow changing {field}")


def settings_changes_apply(
    *, obj: models.Model, changes: Mapping[str, Any], actor: User, project: Any
) -> None:
    """Set, validate and save the changed fields of `obj` and audit them as an update of `project`. Call
    inside the caller's transaction, after `settings_changes_check`."""
    for field, value in changes.items():
        setattr(obj, field, value)
    obj.full_clean()
    obj.save(update_fields=list(changes))
    audit_record(
        actor=actor,
        action="project.update",
        project=project,
        target=project,
        details={"fields": sorted(changes)},
    )
