from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from workers.models import WorkerHeartbeat


def workers_alive() -> list[WorkerHeartbeat]:
    """Workers whose heartbeat is younger than three heartbeat periods."""
    horizon = timezone.now() - timedelta(seconds=3 * settings.HITL_WORKER_HEARTBEAT_SECONDS)
    return list(WorkerHeartbeat.objects.filter(last_seen__gte=horizon))
