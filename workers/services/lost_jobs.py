"""Long jobs whose worker died (killed, restarted, out of memory): an export or an explanation report that
wrote no progress (`heartbeat_at`) for a while is queued again once, then failed. Both build their result
out of place and store it in one final write, so a lost attempt leaves nothing half-written.

The model needs: status ("queued" / "running" / "failed"), started_at, heartbeat_at, attempts, progress,
finished_at, error."""

import logging
from datetime import timedelta

from django.db import models, transaction
from django.db.models import Q
from django.utils import timezone

from hitl.core.outbox import outbox_enqueue

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 2  # a job that kills its worker twice would likely kill the next one as well


def stale_running(stale_after: timedelta) -> Q:
    """RUNNING with no progress written for `stale_after` (its worker is gone)."""
    horizon = timezone.now() - stale_after
    return Q(status="running") & (
        Q(heartbeat_at__lt=horizon) | Q(heartbeat_at__isnull=True, started_at__lt=horizon)
    )


def reap_lost(
    model: type[models.Model], *, stale_after: timedelta, task: str, kwarg: str, what: str
) -> list[int]:
    """Queue every lost job of `model` again (its task sent through the outbox with {kwarg: id}) while an
    attempt is left, else mark it FAILED. Returns their ids."""
    reaped = []
    for pk in model.objects.filter(stale_running(stale_after)).values_list("pk", flat=True):  # type: ignore[attr-defined]
        with transaction.atomic():
            job = model.objects.select_for_update().filter(stale_running(stale_after), pk=pk).first()  # type: ignore[attr-defined]
            if job is None:
                continue
            if job.attempts < MAX_ATTEMPTS:
                job.status, job.progress = "queued", 0.0
                job.save(update_fields=["status", "progress"])
                outbox_enqueue(task=task, kwargs={kwarg: job.pk})
            else:
                job.status, job.finished_at = "failed", timezone.now()
                job.error = f"worker lost twice while building the {what}"
                job.save(update_fields=["status", "finished_at", "error"])
            reaped.append(pk)
    if reaped:
        log.warning("reaped %s %s (worker lost)", what, reaped)
    return reaped
