"""Rows every app writes: the transactional outbox and the audit trail. Both keep the tables they had
before the core app existed (db_table), so moving them here changed no schema."""

from django.conf import settings
from django.db import models


class AuditEvent(models.Model):
    """Who did what, when. `details` holds ids and settings, never patient data."""

    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    project = models.ForeignKey("annotations.Project", null=True, on_delete=models.SET_NULL, related_name="+")
    action = models.CharField(max_length=64)
    target_type = models.CharField(max_length=64, blank=True)
    target_id = models.CharField(max_length=64, blank=True)
    details = models.JSONField(default=dict, blank=True)
    at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        db_table = "annotations_auditevent"
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["project", "-at"])]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M} {self.actor_id} {self.action} {self.target_type}:{self.target_id}"


class OutboxMessage(models.Model):
    """Work to enqueue, written in the same transaction as the change that needs it. A periodic sweep sends
    what the broker refused (e.g. while it was down), so no submission's follow-up work is lost."""

    task = models.CharField(max_length=200)
    kwargs = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True, db_index=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    last_error = models.CharField(max_length=500, blank=True)
    queue = models.CharField(
        max_length=64,
        blank=True,
        default="",
        help_text="the queue to send to instead of the task's route (a lane, hitl.core.lanes), or blank",
    )

    class Meta:
        db_table = "workers_outboxmessage"
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.task} ({'sent' if self.sent_at else 'pending'})"
