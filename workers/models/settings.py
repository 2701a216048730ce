"""A project's machine-learning settings: how the queue is ranked, when to retrain, how a new version is
gated, and the training overrides every run uses. Owned by the machine side; the clinical Project knows
nothing of them. A project without a row uses the field defaults (workers.selectors.settings)."""

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q


class QueryStrategy(models.TextChoices):
    RANDOM = "random", "Random"
    FG_RANDOM = "fg_random", "Foreground-aware random"
    LEAST_CONFIDENCE = "least_confidence", "Least confidence"
    MARGIN = "margin", "Margin"
    ENTROPY = "entropy", "Entropy"
    BALD = "bald", "BALD (MC dropout)"
    COMMITTEE = "committee", "Query by committee"
    DIVERSE = "diverse", "Uncertainty x diversity"


class TrainingSettings(models.Model):
    project = models.OneToOneField(
        "annotations.Project",
        on_delete=models.CASCADE,
        primary_key=True,
        related_name="training_settings",
    )
    query_strategy = models.CharField(
        max_length=32, choices=QueryStrategy.choices, default=QueryStrategy.ENTROPY
    )
    auto_retrain_every = models.PositiveIntegerField(
        default=0, help_text="retrain after N new labels; 0 = off"
    )
    gating_tolerance = models.FloatField(
        default=0.01,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="a new model may lose at most this validation Dice",
    )
    training_config = models.JSONField(
        default=dict,
        blank=True,
        help_text="overrides of the training defaults, used by every run (incl. auto); "
        "validated by workers.services.training_config",
    )

    class Meta:
        verbose_name = "training settings"
        verbose_name_plural = "training settings"
        constraints = [
            models.CheckConstraint(
                condition=Q(gating_tolerance__gte=0) & Q(gating_tolerance__lte=1),
                name="training_settings_gating_0_1",
            ),
        ]

    def __str__(self) -> str:
        return f"training settings of project {self.project_id}"
