from django.conf import settings
from django.db import models
from django.db.models import Q


class AssignmentStatus(models.TextChoices):
    ACTIVE = "active", "Leased to the reader"
    SUBMITTED = "submitted", "Submitted"
    SKIPPED = "skipped", "Skipped"
    FLAGGED = "flagged", "Flagged"
    EXPIRED = "expired", "Lease expired"
    RELEASED = "released", "Released by the reader"


# Statuses that occupy one of the case's reading slots.
HOLDING = (AssignmentStatus.ACTIVE, AssignmentStatus.SUBMITTED)
# Statuses after which the reader is never offered the case again.
READ_ONCE = (
    AssignmentStatus.ACTIVE,
    AssignmentStatus.SUBMITTED,
    AssignmentStatus.SKIPPED,
    AssignmentStatus.FLAGGED,
)


class Assignment(models.Model):
    """A reader's claim on one reading slot of a case, with a lease that expires."""

    project = models.ForeignKey("annotations.Project", on_delete=models.CASCADE, related_name="assignments")
    case = models.ForeignKey("annotations.Case", on_delete=models.CASCADE, related_name="assignments")
    reader = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="assignments")
    slot = models.PositiveSmallIntegerField()
    status = models.CharField(
        max_length=16, choices=AssignmentStatus.choices, default=AssignmentStatus.ACTIVE
    )
    reason = models.CharField(max_length=500, blank=True)
    queue_reason = models.JSONField(
        default=dict, blank=True, help_text="why the case was chosen, at claim time"
    )
    claimed_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    holder = models.CharField(
        max_length=64,
        blank=True,
        default="",
        help_text="the editor tab holding the lease (the X-Editor-Tab header); empty for API clients",
    )

    class Meta:
        ordering = ["-claimed_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["case", "slot"],
                condition=Q(status__in=HOLDING),
                name="assignment_one_reader_per_slot",
            ),
            models.UniqueConstraint(
                fields=["case", "reader"],
                condition=Q(status__in=READ_ONCE),
                name="assignment_reader_reads_case_once",
            ),
            models.UniqueConstraint(
                fields=["project", "reader"],
                condition=Q(status=AssignmentStatus.ACTIVE),
                name="assignment_one_active_lease_per_reader",
            ),
            models.CheckConstraint(
                condition=Q(status__in=AssignmentStatus.values), name="assignment_status_valid"
            ),
            models.CheckConstraint(
                condition=Q(expires_at__gte=models.F("claimed_at")), name="assignment_expiry_after_claim"
            ),
        ]
        indexes = [models.Index(fields=["status", "expires_at"])]

    def __str__(self) -> str:
        return f"case {self.case_id} slot {self.slot} -> {self.reader_id} ({self.status})"
