from datetime import datetime

from django.utils import timezone

from workers.models import WorkerHeartbeat


def worker_heartbeat_record(*, hostname: str, queues: list[str], pid: int, started_at: datetime) -> None:
    WorkerHeartbeat.objects.update_or_create(
        hostname=hostname,
        defaults={"queues": queues, "pid": pid, "started_at": started_at, "last_seen": timezone.now()},
    )


def worker_heartbeat_clear(*, hostname: str) -> None:
    WorkerHeartbeat.objects.filter(hostname=hostname).delete()
