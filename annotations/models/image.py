from django.conf import settings
from django.db import models
from django.db.models import Q

from .project import Modality, Project


class SourceKind(models.TextChoices):
    DICOM = "dicom", "DICOM file"
    DICOM_SERIES = "dicom_series", "DICOM series"
    PNG = "png", "PNG"
    TIFF = "tiff", "TIFF"
    NIFTI = "nifti", "NIfTI volume"


class ImageStatus(models.TextChoices):
    PROCESSING = "processing", "Processing"
    READY = "ready", "Ready"
    FAILED = "failed", "Failed"


class Image(models.Model):
    """One imported image or volume, stored once, de-identified, as an .npy array (S, H, W[, 3])."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="images")
    display_name = models.CharField(max_length=255)
    source_kind = models.CharField(max_length=16, choices=SourceKind.choices)
    modality = models.CharField(max_length=8, choices=Modality.choices)
    pixels_path = models.CharField(max_length=500)
    shape = models.JSONField()
    dtype = models.CharField(max_length=16)
    spacing = models.JSONField(help_text="[row_mm, col_mm, slice_mm]")
    affine = models.JSONField(null=True, blank=True)
    window_presets = models.JSONField(default=list, blank=True)
    content_hash = models.CharField(max_length=64)
    study_uid = models.CharField(max_length=64, blank=True)
    series_uid = models.CharField(max_length=64, blank=True)
    frame_of_reference_uid = models.CharField(max_length=64, blank=True)
    status = models.CharField(max_length=16, choices=ImageStatus.choices, default=ImageStatus.PROCESSING)
    stats = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "content_hash"], name="image_unique_content_per_project"
            ),
            models.CheckConstraint(
                condition=Q(source_kind__in=SourceKind.values), name="image_source_kind_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.display_name} ({self.id})"

    @property
    def num_slices(self) -> int:
        return int(self.shape[0])

    @property
    def is_rgb(self) -> bool:
        return len(self.shape) == 4


class DicomInstance(models.Model):
    """A de-identified DICOM instance kept for DICOM SEG export; the original never reaches storage."""

    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="dicom_instances")
    slice_index = models.PositiveIntegerField()
    sop_instance_uid = models.CharField(max_length=64)
    path = models.CharField(max_length=500)

    class Meta:
        ordering = ["image_id", "slice_index"]
        constraints = [
            models.UniqueConstraint(fields=["image", "slice_index"], name="dicom_instance_unique_slice"),
            models.UniqueConstraint(fields=["sop_instance_uid"], name="dicom_instance_unique_uid"),
        ]

    def __str__(self) -> str:
        return f"image {self.image_id} slice {self.slice_index}"


class CaseSplit(models.TextChoices):
    POOL = "pool", "Pool (to be labelled)"
    TRAIN = "train", "Train"
    VALIDATION = "validation", "Validation"
    TEST = "test", "Test"


class Case(models.Model):
    """The unit of work: one 2D image, or one slice of a volume."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="cases")
    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="cases")
    slice_index = models.PositiveIntegerField(default=0)
    split = models.CharField(max_length=16, choices=CaseSplit.choices, default=CaseSplit.POOL)
    current_annotation = models.ForeignKey(
        "annotations.Annotation", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    # Queue state, written by the queue and scoring services only.
    priority = models.FloatField(default=0.0, help_text="higher = read sooner (from the latest scoring)")
    unit_priority = models.FloatField(
        default=0.0,
        help_text="the score of the case's unit of work (slab or volume) from its slices' priorities",
    )
    queue_reason = models.JSONField(
        default=dict, blank=True, help_text="strategy, score, rank, model version"
    )
    reads_taken = models.PositiveSmallIntegerField(
        default=0, help_text="slots held by active or submitted reads"
    )
    slots_mask = models.PositiveIntegerField(default=0, help_text="bit i set = reading slot i is held")
    readers_required = models.PositiveSmallIntegerField(
        default=0,
        help_text="readers the reading policy gave this case (0 = undecided); the queue uses the larger of "
        "this and the project's readers_per_case",
    )
    flagged_at = models.DateTimeField(null=True, blank=True, help_text="flagged cases leave the queue")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["image", "slice_index"], name="case_unique_slice"),
            models.CheckConstraint(condition=Q(split__in=CaseSplit.values), name="case_split_valid"),
            models.CheckConstraint(condition=Q(readers_required__lte=10), name="case_readers_required_0_10"),
        ]
        indexes = [
            models.Index(fields=["project", "split"]),
            models.Index(fields=["project", "split", "-priority", "id"], name="case_queue_order"),
            models.Index(
                fields=["project", "split", "-unit_priority", "image", "slice_index"],
                name="case_unit_queue_order",
            ),
        ]

    def __str__(self) -> str:
        return f"case {self.id} (image {self.image_id} slice {self.slice_index})"
