from celery import shared_task


@shared_task(acks_late=True, soft_time_limit=25, time_limit=30)
def ping(token: str) -> str:
    """Round-trip probe: records that a worker executed it (used by health checks and tests)."""
    from workers.services.system import ping_record

    ping_record(token=token)
    return token
