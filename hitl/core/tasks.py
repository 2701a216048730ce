"""Core periodic work (queue "default"): send what the outbox could not send at commit time."""

from celery import shared_task


@shared_task(acks_late=True, soft_time_limit=50, time_limit=60)
def outbox_sweep() -> int:
    from hitl.core.outbox import outbox_sweep as sweep

    return sweep()
