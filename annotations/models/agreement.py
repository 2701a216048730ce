"""Inter-observer agreement of one case's readers, computed by the agreement task after each submission.

One `Agreement` row per distinct set of reader revisions (`inputs_key`): a reader who changes a mask gives a
new row and, when the STAPLE consensus changes, a new consensus revision. Nothing is overwritten; the newest
row of a case is its current agreement."""

from django.conf import settings
from django.db import models
from django.db.models import Q


class Agreement(models.Model):
    project = models.ForeignKey("annotations.Project", on_delete=models.CASCADE, related_name="agreements")
    case = models.ForeignKey("annotations.Case", on_delete=models.CASCADE, related_name="agreements")
    inputs_key = models.CharField(max_length=500, help_text="sorted reader revision ids, comma-separated")
    reader_annotation_ids = models.JSONField(default=list)
    consensus = models.ForeignKey(
        "annotations.Annotation", on_delete=models.PROTECT, related_name="consensus_of"
    )
    n_readers = models.PositiveSmallIntegerField()
    mean_pairwise_dice = models.FloatField()
    mean_pairwise_hd95 = models.FloatField()
    kappa = models.FloatField()
    kappa_method = models.CharField(max_length=16)
    model_version = models.ForeignKey(
        "workers.ModelVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    model_dice_vs_consensus = models.FloatField(null=True, blank=True)
    model_within_spread = models.BooleanField(null=True, blank=True)
    metrics = models.JSONField(default=dict, help_text="workers.ml.agreement.metrics.CaseAgreement.to_dict()")
    seconds = models.FloatField(default=0.0, help_text="time the computation took")
    computed_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-computed_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["case", "inputs_key"], name="agreement_unique_inputs"),
            models.CheckConstraint(condition=Q(n_readers__gte=2), name="agreement_two_readers"),
        ]
        indexes = [models.Index(fields=["project", "-computed_at"])]

    def __str__(self) -> str:
        return f"agreement case {self.case_id} ({self.n_readers} readers)"


class ReaderAgreement(models.Model):
    """One reader's revision against the consensus of an agreement row (for per-reader statistics)."""

    agreement = models.ForeignKey(Agreement, on_delete=models.CASCADE, related_name="readers")
    project = models.ForeignKey("annotations.Project", on_delete=models.CASCADE, related_name="+")
    reader = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    annotation = models.ForeignKey("annotations.Annotation", on_delete=models.PROTECT, related_name="+")
    dice_vs_consensus = models.FloatField()
    hd95_vs_consensus = models.FloatField()
    sensitivity = models.FloatField()
    specificity = models.FloatField()
    time_spent_s = models.FloatField(default=0.0)
    read_at = models.DateTimeField(help_text="when the reader submitted the revision")

    class Meta:
        ordering = ["agreement_id", "reader_id"]
        constraints = [
            models.UniqueConstraint(fields=["agreement", "reader"], name="reader_agreement_unique_reader"),
        ]
        indexes = [models.Index(fields=["project", "reader"])]

    def __str__(self) -> str:
        return f"reader {self.reader_id} on agreement {self.agreement_id}: {self.dice_vs_consensus:.3f}"
