from django.conf import settings
from django.db import models
from django.db.models import Q


class ExportStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    EXPIRED = "expired", "Expired (file deleted)"


class ExportFormat(models.TextChoices):
    NIFTI = "nifti", "NIfTI volumes"
    DICOM_SEG = "dicom_seg", "DICOM SEG"
    PNG = "png", "PNG label masks"
    COCO = "coco", "COCO JSON (RLE)"
    CSV = "csv", "Agreement and correction effort CSV"


class ExportLabels(models.TextChoices):
    LATEST = "latest", "Latest accepted revision per case"
    CONSENSUS = "consensus", "Consensus revision per case (an adjudicated one when an admin settled the case)"
    ALL = "all", "Every revision of every reader"


class ExportJob(models.Model):
    """One export. `params` holds the request and, frozen when the job was created, the exact revision
    ids it exports (`revision_ids`) and the newest annotation id it may read (`snapshot_id`), so a job
    never mixes versions however long it waits in the queue."""

    project = models.ForeignKey("annotations.Project", on_delete=models.CASCADE, related_name="export_jobs")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    status = models.CharField(max_length=16, choices=ExportStatus.choices, default=ExportStatus.QUEUED)
    progress = models.FloatField(default=0.0)
    params = models.JSONField(default=dict)
    result_path = models.CharField(max_length=500, blank=True)
    sha256 = models.CharField(max_length=64, blank=True)
    size_bytes = models.BigIntegerField(default=0)
    counts = models.JSONField(default=dict, blank=True, help_text="{masks, cases, images, files}")
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True, help_text="the worker's last progress write")
    attempts = models.PositiveSmallIntegerField(
        default=0, help_text="executions started (a lost one is retried once)"
    )
    finished_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(progress__gte=0) & Q(progress__lte=100), name="export_job_progress_0_100"
            ),
            models.CheckConstraint(
                condition=Q(status__in=ExportStatus.values), name="export_job_status_valid"
            ),
        ]
        indexes = [models.Index(fields=["status", "expires_at"])]

    def __str__(self) -> str:
        return f"export {self.id} ({self.status})"
