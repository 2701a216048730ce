import secrets

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q

from hitl.core.permissions import Role


class Modality(models.TextChoices):
    CT = "CT", "CT"
    MR = "MR", "MR"
    XR = "XR", "X-ray"
    PATH = "PATH", "Pathology (RGB)"
    OT = "OT", "Other"


class LabelPolicy(models.TextChoices):
    """Which mask a multi-reader case trains on (single-reader cases always train on their latest)."""

    CONSENSUS = "consensus", "STAPLE consensus"
    MAJORITY = "majority", "Majority vote"
    LATEST = "latest", "Latest revision"


def _new_salt() -> str:
    return secrets.token_hex(32)


def _new_date_shift() -> int:
    # Shift dates back by 1..3650 days: keeps intervals (longitudinal analysis), hides the real dates.
    return -(secrets.randbelow(3650) + 1)


def validate_label_classes(value: object) -> None:
    """[{"value": 1, "name": "liver", "color": "#ff0000"}, ...]: values 1..255, unique, colours #rrggbb."""
    if not isinstance(value, list) or not value:
        raise ValidationError("label_classes must be a non-empty list")
    seen: set[int] = set()
    for item in value:
        if not isinstance(item, dict) or set(item) != {"value", "name", "color"}:
            raise ValidationError("each label class needs exactly value, name and color")
        v, color = item["value"], item["color"]
        if not isinstance(v, int) or not 1 <= v <= 255 or v in seen:
            raise ValidationError("label values must be unique integers 1..255")
        if not isinstance(color, str) or len(color) != 7 or color[0] != "#":
            raise ValidationError("colors must look like #rrggbb")
        int(color[1:], 16)
        if not isinstance(item["name"], str) or not 0 < len(item["name"]) <= 64:
            raise ValidationError("label names must be 1..64 characters")
        seen.add(v)


class UnitScore(models.TextChoices):
    MAX = "max", "Max"
    MEAN = "mean", "Mean"
    TOPK = "topk", "Mean of the top quarter"


class Project(models.Model):
    name = models.CharField(max_length=200, unique=True)
    description = models.TextField(blank=True)
    modality = models.CharField(max_length=8, choices=Modality.choices, default=Modality.OT)
    label_classes = models.JSONField(validators=[validate_label_classes])
    readers_per_case = models.PositiveSmallIntegerField(default=1)
    # Reading policy (annotations.services.reading_policy): a case's readers are the largest of
    # readers_per_case, multi_read_readers (for a seeded random multi_read_share of the cases) and
    # routing_readers (for the most uncertain routing_share of the queued cases after each scoring).
    multi_read_share = models.FloatField(default=0.0, help_text="share of cases read by multi_read_readers")
    multi_read_readers = models.PositiveSmallIntegerField(default=3)
    routing_share = models.FloatField(
        default=0.0, help_text="the most uncertain share of queued cases gets routing_readers"
    )
    routing_readers = models.PositiveSmallIntegerField(default=2)
    reading_seed = models.IntegerField(default=0, help_text="seed of the random multi-read share")
    label_policy = models.CharField(max_length=16, choices=LabelPolicy.choices, default=LabelPolicy.CONSENSUS)
    # The unit of work on volumes (annotations.selectors.units): 1 = one slice (each case on its own), k > 1 =
    # slabs of k contiguous slices, 0 = the whole volume. A reader who starts a unit is given its slices one
    # after another (most uncertain first), and units are queued by the `unit_score` of their slices'
    # priorities ("max", "mean", or "topk": the mean of the top quarter of them).
    unit_slices = models.PositiveSmallIntegerField(default=1)
    unit_score = models.CharField(max_length=8, choices=UnitScore.choices, default=UnitScore.MAX)
    # De-identification secrets: never shown in the API, never logged.
    deid_salt = models.CharField(max_length=64, default=_new_salt, editable=False)
    date_shift_days = models.IntegerField(default=_new_date_shift, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(readers_per_case__gte=1) & Q(readers_per_case__lte=10),
                name="project_readers_1_10",
            ),
            models.CheckConstraint(
                condition=Q(multi_read_share__gte=0)
                & Q(multi_read_share__lte=1)
                & Q(routing_share__gte=0)
                & Q(routing_share__lte=1),
                name="project_reading_shares_0_1",
            ),
            models.CheckConstraint(
                condition=Q(multi_read_readers__gte=1)
                & Q(multi_read_readers__lte=10)
                & Q(routing_readers__gte=1)
                & Q(routing_readers__lte=10),
                name="project_policy_readers_1_10",
            ),
            models.CheckConstraint(
                condition=Q(label_policy__in=LabelPolicy.values), name="project_label_policy_valid"
            ),
            models.CheckConstraint(condition=Q(unit_slices__lte=64), name="project_unit_slices_0_64"),
            models.CheckConstraint(
                condition=Q(unit_score__in=UnitScore.values), name="project_unit_score_valid"
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def label_values(self) -> set[int]:
        return {int(c["value"]) for c in self.label_classes}


class Membership(models.Model):
    """One role of one user in one project; a user may hold several roles (e.g. annotator + data manager)."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["project_id", "user_id", "role"]
        constraints = [
            models.UniqueConstraint(fields=["project", "user", "role"], name="membership_unique_role"),
            models.CheckConstraint(condition=Q(role__in=Role.values), name="membership_role_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.user_id}@{self.project_id}:{self.role}"
