"""The machine-learning settings leave annotations.Project for workers.TrainingSettings: create the table and
copy every project's four values into it (annotations 0012 then drops them from Project). Reversible: going
back copies the rows' values onto the projects (annotations 0012 reversed has re-added the columns)."""

import django.core.validators
import django.db.models.deletion
from django.db import migrations, models

FIELDS = ("query_strategy", "auto_retrain_every", "gating_tolerance", "training_config")


def copy_from_projects(apps, schema_editor):
    """One TrainingSettings row per existing project, holding the project's current values."""
    db = schema_editor.connection.alias
    Project = apps.get_model("annotations", "Project")
    TrainingSettings = apps.get_model("workers", "TrainingSettings")
    rows = [
        TrainingSettings(project_id=values.pop("id"), **values)
        for values in Project.objects.using(db).order_by("id").values("id", *FIELDS).iterator()
    ]
    TrainingSettings.objects.using(db).bulk_create(rows, batch_size=500)


def copy_to_projects(apps, schema_editor):
    """Back onto the projects (a project without a row keeps the defaults the re-added columns got)."""
    db = schema_editor.connection.alias
    Project = apps.get_model("annotations", "Project")
    TrainingSettings = apps.get_model("workers", "TrainingSettings")
    for values in TrainingSettings.objects.using(db).values("project_id", *FIELDS).iterator():
        Project.objects.using(db).filter(pk=values.pop("project_id")).update(**values)


class Migration(migrations.Migration):
    dependencies = [
        ("annotations", "0010_delete_auditevent"),  # Project still has the four fields
        ("workers", "0005_delete_outboxmessage"),
    ]

    operations = [
        migrations.CreateModel(
            name="TrainingSettings",
            fields=[
                (
                    "project",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        primary_key=True,
                        related_name="training_settings",
                        serialize=False,
                        to="annotations.project",
                    ),
                ),
                (
                    "query_strategy",
                    models.CharField(
                        choices=[
                            ("random", "Random"),
                            ("fg_random", "Foreground-aware random"),
                            ("least_confidence", "Least confidence"),
                            ("margin", "Margin"),
                            ("entropy", "Entropy"),
                            ("bald", "BALD (MC dropout)"),
                            ("committee", "Query by committee"),
                            ("diverse", "Uncertainty x diversity"),
                        ],
                        default="entropy",
                        max_length=32,
                    ),
                ),
                (
                    "auto_retrain_every",
                    models.PositiveIntegerField(default=0, help_text="retrain after N new labels; 0 = off"),
                ),
                (
                    "gating_tolerance",
                    models.FloatField(
                        default=0.01,
                        help_text="a new model may lose at most this validation Dice",
                        validators=[
                            django.core.validators.MinValueValidator(0.0),
                            django.core.validators.MaxValueValidator(1.0),
                        ],
                    ),
                ),
                (
                    "training_config",
                    models.JSONField(
                        blank=True,
                        default=dict,
                        help_text="overrides of the training defaults, used by every run (incl. auto); "
                        "validated by workers.services.training_config",
                    ),
                ),
            ],
            options={
                "verbose_name": "training settings",
                "verbose_name_plural": "training settings",
                "constraints": [
                    models.CheckConstraint(
                        condition=models.Q(("gating_tolerance__gte", 0), ("gating_tolerance__lte", 1)),
                        name="training_settings_gating_0_1",
                    )
                ],
            },
        ),
        migrations.RunPython(copy_from_projects, copy_to_projects),
    ]
