"""Writes of a project's machine-learning settings (workers.models.TrainingSettings): who may change them,
how they are checked, and the audit trail they leave."""

from typing import Any

from django.db import transaction

from annotations.models import Project
from hitl.core.permissions import Action
from hitl.core.settings_update import settings_changes_apply, settings_changes_check
from hitl.core.types import User
from workers.models import TrainingSettings
from workers.services.training_config import training_config_validate

# Which action each setting needs (ML engineers and admins hold it): as when they were project settings.
FIELD_ACTIONS: dict[str, Action] = {
    "query_strategy": Action.SET_TRAINING,
    "auto_retrain_every": Action.SET_TRAINING,
    "gating_tolerance": Action.SET_TRAINING,
    "training_config": Action.SET_TRAINING,
}


@transaction.atomic
def training_settings_get_or_create(*, project: Project) -> TrainingSettings:
    """The project's settings row, created with the defaults when it has none (locked for the caller's
    transaction, so two first writers do not race)."""
    settings, _created = TrainingSettings.objects.select_for_update().get_or_create(project=project)
    return settings


@transaction.atomic
def training_settings_update(
    *, project: Project, actor: User, roles: set[str], changes: dict[str, Any]
) -> TrainingSettings:
    """Apply `changes`; every setting must be allowed for one of `roles` (else PermissionError, HTTP 403).
    An empty change is refused (ValidationError), not recorded. `training_config` is checked key by key
    (`training_config_validate`); the strategy must be a QueryStrategy, the gating tolerance in 0..1,
    auto_retrain_every >= 0 (ValidationError, HTTP 400). Audited as the project update it used to be."""
    settings_changes_check(changes=changes, field_actions=FIELD_ACTIONS, roles=roles)
    changes = dict(changes)
    if "training_config" in changes:
        changes["training_config"] = training_config_validate(changes["training_config"])
    settings = training_settings_get_or_create(project=project)
    settings_changes_apply(obj=settings, changes=changes, actor=actor, project=project)
    return settings
