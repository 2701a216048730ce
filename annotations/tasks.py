"""The clinical side's periodic work (queue "default"): thin, like every task; the service does the work."""

from celery import shared_task


@shared_task(acks_late=True, soft_time_limit=50, time_limit=60)
def leases_expire() -> int:
    from annotations.services.queue import leases_expire as expire

    return expire()
