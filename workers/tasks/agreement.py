"""Agreement tasks (queue "default"): recompute a multi-reader case's agreement and consensus."""

from celery import shared_task


@shared_task(acks_late=True, reject_on_worker_lost=True, soft_time_limit=120, time_limit=150)
def agreement_update(case_id: int) -> int | None:
    from workers.services.agreement import agreement_update as update

    agreement = update(case_id=case_id)  # idempotent: the same reader revisions are never computed twice
    return agreement.pk if agreement is not None else None


@shared_task(soft_time_limit=60, time_limit=90)
def agreements_reconcile() -> int:
    from workers.services.agreement_reconcile import agreements_reconcile as reconcile

    return len(reconcile())
