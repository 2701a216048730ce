from celery import shared_task


@shared_task(acks_late=True, soft_time_limit=50, time_limit=60)
def leases_expire() -> int:
    from annotations.services.queue import leases_expire as expire

    return expire()


@shared_task(acks_late=True, soft_time_limit=50, time_limit=60)
def outbox_sweep() -> int:
    from workers.services.outbox import outbox_sweep as sweep

    return sweep()
