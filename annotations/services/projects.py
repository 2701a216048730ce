from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import Http404

from annotations.models import Case, CaseSplit, Membership, Modality, Project, Role
from annotations.models.project import validate_label_classes
from annotations.selectors.units import unit_scores
from hitl.core.audit import audit_record
from hitl.core.errors import ConflictError
from hitl.core.permissions import Action
from hitl.core.settings_update import settings_changes_apply, settings_changes_check
from hitl.core.types import User

# Which role may change which project setting (admins may change all of them).
FIELD_ACTIONS: dict[str, Action] = {
    "name": Action.UPDATE_PROJECT,
    "description": Action.UPDATE_PROJECT,
    "label_classes": Action.UPDATE_PROJECT,
    "modality": Action.UPDATE_PROJECT,
    "readers_per_case": Action.SET_READERS,
    "multi_read_share": Action.SET_READERS,
    "multi_read_readers": Action.SET_READERS,
    "routing_share": Action.SET_READERS,
    "routing_readers": Action.SET_READERS,
    "reading_seed": Action.SET_READERS,
    "unit_slices": Action.SET_READERS,
    "unit_score": Action.SET_READERS,
    "label_policy": Action.SET_TRAINING,
}
# The machine-learning settings (query strategy, auto-retraining, gating, training overrides) are not the
# project's: workers.services.training_settings.training_settings_update sets them.


@transaction.atomic
def project_create(
    *,
    creator: User,
    name: str,
    label_classes: list[dict[str, Any]],
    modality: str = Modality.OT,
    description: str = "",
    readers_per_case: int = 1,
) -> Project:
    """Create a project; the creator becomes its admin."""
    validate_label_classes(label_classes)
    project = Project(
        name=name,
        description=description,
        modality=modality,
        label_classes=label_classes,
        readers_per_case=readers_per_case,
    )
    project.full_clean()
    project.save()
    Membership.objects.create(project=project, user=creator, role=Role.ADMIN)
    audit_record(actor=creator, action="project.create", project=project, target=project)
    return project


@transaction.atomic
def project_update(*, project: Project, actor: User, roles: set[str], changes: dict[str, Any]) -> Project:
    """Apply `changes`; every field must be allowed for one of `roles` (else PermissionError). An empty
    change is refused (ValidationError), not recorded as an update."""
    settings_changes_check(changes=changes, field_actions=FIELD_ACTIONS, roles=roles)
    settings_changes_apply(obj=project, changes=changes, actor=actor, project=project)
    if {"unit_slices", "unit_score"} & set(changes):
        unit_priorities_refresh(project=project)
    return project


def unit_priorities_refresh(*, project: Project) -> int:
    """Every pool case's `unit_priority` from its unit's slices (annotations.selectors.units), after the unit
    of work changed (scoring writes them with the priorities). Returns the number of cases."""
    cases = list(
        Case.objects.filter(project=project, split=CaseSplit.POOL).only(
            "id", "image_id", "slice_index", "priority"
        )
    )
    scores = unit_scores(
        ((c.pk, c.image_id, c.slice_index, c.priority) for c in cases),
        project.unit_slices,
        project.unit_score,
    )
    for case in cases:
        case.unit_priority = scores[case.pk]
    Case.objects.bulk_update(cases, ["unit_priority"], batch_size=500)
    return len(cases)


@transaction.atomic
def membership_add(*, project: Project, actor: User, username: str, role: str) -> Membership:
    user = get_user_model().objects.filter(username=username, is_active=True).first()
    if user is None:
        raise ValidationError({"username": "no active user with this username"})
    if role not in Role.values:
        raise ValidationError({"role": f"role must be one of {', '.join(Role.values)}"})
    membership, created = Membership.objects.get_or_create(project=project, user=user, role=role)
    if created:
        audit_record(
            actor=actor,
            action="membership.add",
            project=project,
            target=membership,
            details={"user_id": user.pk, "role": role},
        )
    return membership


@transaction.atomic
def membership_remove(*, project: Project, actor: User, membership_id: int) -> None:
    membership = project.memberships.filter(pk=membership_id).select_for_update().first()
    if membership is None:
        raise Http404("not a membership of this project")
    if membership.role == Role.ADMIN and project.memberships.filter(role=Role.ADMIN).count() == 1:
        raise ConflictError("last_admin", "a project keeps at least one admin")
    details = {"user_id": membership.user_id, "role": membership.role}
    membership.delete()
    audit_record(actor=actor, action="membership.remove", project=project, details=details)
