from django.conf import settings
from django.db import models
from django.db.models import Q

from .image import CaseSplit
from .project import Project


class ImportStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"  # every file imported (or reported as a duplicate)
    PARTIAL = "partial", "Partly imported"  # some files imported, some refused
    FAILED = "failed", "Failed"  # no file imported


# What one file of an import job is at: waiting, being parsed, or its outcome.
IMPORT_FILE_STATUSES = ("queued", "running", "imported", "duplicate", "failed")
FINISHED_IMPORT = (ImportStatus.SUCCEEDED, ImportStatus.PARTIAL, ImportStatus.FAILED)


class ImportJob(models.Model):
    """One upload (one or more files, optionally a reference mask) parsed off the web process.

    `files` holds one entry per uploaded file, in upload order:
        {"index": 1, "size": bytes, "staged": storage path until parsed (then ""), "mask_staged": ...,
         "status": "queued" | "running" | "imported" | "duplicate" | "failed",
         "image_ids": [...], "duplicates": [{"existing_image_id": ...}],
         "error": {"code", "message", "status"} | null, "peak_rss_bytes": ..., "seconds": ...}
    File names are never stored: a file is known by its position in the upload (names carry PHI).
    """

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="import_jobs")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    split = models.CharField(max_length=16, choices=CaseSplit.choices, default=CaseSplit.POOL)
    status = models.CharField(max_length=16, choices=ImportStatus.choices, default=ImportStatus.QUEUED)
    progress = models.PositiveSmallIntegerField(default=0, help_text="0..100")
    message = models.CharField(max_length=200, blank=True)
    files = models.JSONField(default=list)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.CheckConstraint(condition=Q(status__in=ImportStatus.values), name="import_status_valid"),
            models.CheckConstraint(condition=Q(progress__lte=100), name="import_progress_0_100"),
        ]
        indexes = [models.Index(fields=["status", "updated_at"])]

    def __str__(self) -> str:
        return f"import #{self.pk} ({self.status})"

    @property
    def finished(self) -> bool:
        return self.status in FINISHED_IMPORT
