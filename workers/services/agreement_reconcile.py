"""Agreement updates that never happened: a worker killed while computing one (its message comes back only
after the broker's visibility timeout), or a message lost between the broker and a dying worker. Every
minute (beat) the cases whose readers' latest revisions are newer than their latest agreement, and older
than settings.HITL_AGREEMENT_RECONCILE_SECONDS, get their update sent again through the outbox
(`agreement_update` is idempotent, so one already on its way costs nothing). Only revisions of the last day
are looked at: a case whose agreement keeps failing is not retried for ever."""

import logging
from datetime import timedelta

from django.conf import settings
from django.db.models import Count, F, Max, Q
from django.utils import timezone

from annotations.models import AnnotationKind, Case
from hitl.core import task_names
from hitl.core.outbox import outbox_enqueue

log = logging.getLogger(__name__)

LOOK_BACK = timedelta(days=1)
BATCH = 500  # cases per sweep


def agreements_missing(*, older_than: timedelta, now=None) -> list[int]:
    """Ids of cases with two or more readers whose last reader revision (older than `older_than`, newer than
    a day) is newer than the case's latest agreement, or that have none."""
    now = now or timezone.now()
    reader = Q(annotations__kind=AnnotationKind.READER)
    return list(
        Case.objects.filter(
            reader,
            annotations__created_at__gte=now - LOOK_BACK,
            annotations__created_at__lt=now - older_than,
        )
        .values("pk")
        .distinct()
        .annotate(
            readers=Count("annotations__author", filter=reader, distinct=True),
            last_read=Max("annotations__created_at", filter=reader),
            last_agreed=Max("agreements__computed_at"),
        )
        .filter(readers__gte=2)
        .filter(Q(last_agreed__isnull=True) | Q(last_agreed__lt=F("last_read")))
        .order_by("last_read")
        .values_list("pk", flat=True)[:BATCH]
    )


def agreements_reconcile(*, older_than_s: float | None = None) -> list[int]:
    """Send the agreement update of every case `agreements_missing` finds again; returns their ids."""
    seconds = settings.HITL_AGREEMENT_RECONCILE_SECONDS if older_than_s is None else older_than_s
    case_ids = agreements_missing(older_than=timedelta(seconds=seconds))
    for case_id in case_ids:
        outbox_enqueue(task=task_names.AGREEMENT_UPDATE, kwargs={"case_id": case_id})
    if case_ids:
        log.warning("agreement updates sent again for %d cases (lost): %s", len(case_ids), case_ids[:20])
    return case_ids
