"""Reads of a project's machine-learning settings (workers.models.TrainingSettings)."""

from annotations.models import Project
from workers.models import TrainingSettings


def training_settings_for(project: Project | int) -> TrainingSettings:
    """The project's settings (one query). A project that never saved any gets an unsaved row holding the
    defaults: nothing is written here (`training_settings_update` creates the row on the first change), so
    a reader never needs a row to exist and projects created by the clinical side need no hook."""
    project_id = project if isinstance(project, int) else project.pk
    found = TrainingSettings.objects.filter(project_id=project_id).first()
    return found if found is not None else TrainingSettings(project_id=project_id)
