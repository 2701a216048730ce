from django.conf import settings
from django.db import models
from django.db.models import Q


class ReportStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled by a user"


OPEN_REPORT = (ReportStatus.QUEUED, ReportStatus.RUNNING)


class ExplanationReport(models.Model):
    """The explanation quality report of one model version on a project's own reference-labelled cases
    (`workers.ml.explain.report.report_build`). `case_ids` are the exact cases, chosen when it was
    requested; `result` is the report dict and `plot_path` its PNG on the storage backend. It stays about
    its version even when another one becomes active."""

    project = models.ForeignKey(
        "annotations.Project", on_delete=models.CASCADE, related_name="explanation_reports"
    )
    model_version = models.ForeignKey(
        "workers.ModelVersion", on_delete=models.CASCADE, related_name="explanation_reports"
    )
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    status = models.CharField(max_length=16, choices=ReportStatus.choices, default=ReportStatus.QUEUED)
    progress = models.FloatField(default=0.0)
    methods = models.JSONField(default=list, help_text="the explanation methods asked for")
    case_ids = models.JSONField(default=list, help_text="the exact cases the report is computed on")
    result = models.JSONField(default=dict, blank=True, help_text="the report: methods, skipped, surrogate")
    partial = models.JSONField(
        default=dict,
        blank=True,
        help_text=(
            "rows computed so far, {case_ids, rows: {method: [metrics of its first cases]}}: "
            "a redelivered report resumes after them"
        ),
    )
    plot_path = models.CharField(max_length=500, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True, help_text="the worker's last progress write")
    attempts = models.PositiveSmallIntegerField(
        default=0, help_text="executions started (a lost one is retried once)"
    )
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["project"],
                condition=Q(status__in=OPEN_REPORT),
                name="explanation_report_one_open_per_project",
            ),
            models.CheckConstraint(
                condition=Q(progress__gte=0) & Q(progress__lte=100), name="explanation_report_progress_0_100"
            ),
            models.CheckConstraint(
                condition=Q(status__in=ReportStatus.values), name="explanation_report_status_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"explanation report {self.id} ({self.status})"
