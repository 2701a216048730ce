from django.conf import settings
from django.db import models
from django.db.models import Q


class VersionState(models.TextChoices):
    CANDIDATE = "candidate", "Candidate"
    ACTIVE = "active", "Active"
    RETIRED = "retired", "Retired"


class ModelVersion(models.Model):
    """Trained weights (state_dict + JSON config on the storage backend) with their metrics. At most one
    version per project is active; a new one becomes active only through gating or an explicit promote."""

    project = models.ForeignKey(
        "annotations.Project", on_delete=models.CASCADE, related_name="model_versions"
    )
    number = models.PositiveIntegerField()
    state = models.CharField(max_length=16, choices=VersionState.choices, default=VersionState.CANDIDATE)
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="children"
    )
    weights_path = models.CharField(max_length=500)
    weights_sha256 = models.CharField(max_length=64)
    config = models.JSONField(default=dict)
    metrics = models.JSONField(
        default=dict, help_text="{validation_dice, test_dice, per_class, labelled_cases}"
    )
    scoring = models.JSONField(
        default=dict,
        blank=True,
        help_text=(
            "pool scoring in chunks: {run, case_ids, next, total, done, started_at, finished_at}; "
            "each chunk is its own task, so the batch worker takes other work between chunks"
        ),
    )
    created_at = models.DateTimeField(auto_now_add=True)
    promoted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["project_id", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["project", "number"], name="model_version_unique_number"),
            models.UniqueConstraint(
                fields=["project"], condition=Q(state=VersionState.ACTIVE), name="model_version_one_active"
            ),
            models.CheckConstraint(
                condition=Q(state__in=VersionState.values), name="model_version_state_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.project_id} v{self.number} ({self.state})"

    @property
    def arch(self) -> str:
        """The network architecture (`NetworkConfig.arch`) recorded in the version's config."""
        return str(self.config.get("network", {}).get("arch", "unet"))

    @property
    def backend(self) -> str:
        """The model backend that trained (or imported) it (workers.ml.backends); "builtin" when the
        config names none."""
        return str(self.config.get("backend") or "builtin")


class RunStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


OPEN_RUN = (RunStatus.QUEUED, RunStatus.RUNNING)


class TrainingRun(models.Model):
    """One training job. Its state lives here (not only in Celery) so the UI can show it and it survives a
    broker restart."""

    project = models.ForeignKey("annotations.Project", on_delete=models.CASCADE, related_name="training_runs")
    status = models.CharField(max_length=16, choices=RunStatus.choices, default=RunStatus.QUEUED)
    trigger = models.CharField(max_length=16, default="manual", help_text="manual | auto | seed")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    base_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    result_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    config = models.JSONField(default=dict)
    seed = models.IntegerField(default=0)
    label_policy = models.CharField(
        max_length=16, default="latest", help_text="consensus | majority | latest"
    )
    revision_ids = models.JSONField(default=list, help_text="the exact annotation revisions trained on")
    progress = models.FloatField(default=0.0)
    epochs = models.JSONField(
        default=list, help_text="per-epoch {epoch, train_loss, val_dice, seconds, eta_seconds}"
    )
    outcome = models.TextField(blank=True, help_text="gating decision or failure reason, in words")
    cancel_requested = models.BooleanField(default=False)
    attempts = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["project"], condition=Q(status__in=OPEN_RUN), name="training_run_one_open_per_project"
            ),
            models.CheckConstraint(
                condition=Q(progress__gte=0) & Q(progress__lte=100), name="training_run_progress_0_100"
            ),
            models.CheckConstraint(
                condition=Q(status__in=RunStatus.values), name="training_run_status_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"run {self.id} ({self.status})"


class CaseScore(models.Model):
    """The scoring of one case by one model version (uncertainty components and the strategy's score)."""

    case = models.ForeignKey("annotations.Case", on_delete=models.CASCADE, related_name="scores")
    model_version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="scores")
    strategy = models.CharField(max_length=32)
    score = models.FloatField()
    rank = models.PositiveIntegerField()
    components = models.JSONField(default=dict, help_text="entropy, bald, margin, ... for this case")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["model_version_id", "rank"]
        constraints = [models.UniqueConstraint(fields=["case", "model_version"], name="case_score_unique")]

    def __str__(self) -> str:
        return f"case {self.case_id} by v{self.model_version_id}: {self.score:.4f}"


class Prediction(models.Model):
    """A model's proposed mask and uncertainty map for one case (PNG on the storage backend)."""

    case = models.ForeignKey("annotations.Case", on_delete=models.CASCADE, related_name="predictions")
    model_version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="predictions")
    mask_path = models.CharField(max_length=500)
    uncertainty_path = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["case", "model_version"], name="prediction_unique")]

    def __str__(self) -> str:
        return f"prediction case {self.case_id} v{self.model_version_id}"


class Explanation(models.Model):
    """An explanation map for one case by one model version; stale when that version is no longer active."""

    case = models.ForeignKey("annotations.Case", on_delete=models.CASCADE, related_name="explanations")
    model_version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="explanations")
    method = models.CharField(max_length=32)
    map_path = models.CharField(max_length=500)
    params = models.JSONField(default=dict)
    cost_forward_units = models.FloatField()
    seconds = models.FloatField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["case", "model_version", "method"], name="explanation_unique")
        ]

    def __str__(self) -> str:
        return f"{self.method} case {self.case_id} v{self.model_version_id}"
