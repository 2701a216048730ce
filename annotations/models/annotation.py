from django.conf import settings
from django.db import models
from django.db.models import F, Q


class AnnotationKind(models.TextChoices):
    READER = "reader", "Reader revision"
    REFERENCE = "reference", "Imported reference (ground truth)"
    CONSENSUS = "consensus", "Consensus"
    ADJUDICATED = "adjudicated", "Adjudicated (an admin's decision; training and exports prefer it)"


class Annotation(models.Model):
    """An immutable mask revision. Nothing is ever overwritten: a correction is a new row whose `base`
    is the revision it started from; the case's "current" mask is a pointer (Case.current_annotation)."""

    case = models.ForeignKey("annotations.Case", on_delete=models.PROTECT, related_name="annotations")
    revision = models.PositiveIntegerField()
    kind = models.CharField(max_length=16, choices=AnnotationKind.choices, default=AnnotationKind.READER)
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="annotations"
    )
    base = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="children")
    mask_path = models.CharField(max_length=500)
    mask_sha256 = models.CharField(max_length=64)
    label_counts = models.JSONField(default=dict, help_text="{label value: pixel count}")
    time_spent_s = models.FloatField(default=0.0)
    assignment = models.ForeignKey(
        "annotations.Assignment", null=True, blank=True, on_delete=models.PROTECT, related_name="annotations"
    )
    proposal_model_version = models.ForeignKey(
        "workers.ModelVersion",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="the model whose proposal the reader started from",
    )
    # Correction effort against that proposal (null when there was none).
    effort_dice = models.FloatField(null=True, blank=True)
    pixels_changed = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["case_id", "revision"]
        constraints = [
            models.UniqueConstraint(fields=["case", "revision"], name="annotation_unique_revision"),
            models.CheckConstraint(condition=Q(revision__gte=1), name="annotation_revision_positive"),
            models.CheckConstraint(condition=Q(time_spent_s__gte=0), name="annotation_time_nonnegative"),
            models.CheckConstraint(
                condition=~Q(kind=AnnotationKind.READER) | Q(author__isnull=False),
                name="annotation_reader_has_author",
            ),
            models.CheckConstraint(condition=Q(kind__in=AnnotationKind.values), name="annotation_kind_valid"),
            models.CheckConstraint(condition=~Q(base=F("id")), name="annotation_base_not_self"),
        ]

    def __str__(self) -> str:
        return f"case {self.case_id} r{self.revision} ({self.kind})"
