"""A worker bootstep that records a heartbeat row on a timer (see WorkerHeartbeat)."""

import logging
import os

from celery import bootsteps

log = logging.getLogger(__name__)


class HeartbeatStep(bootsteps.StartStopStep):
    requires = {"celery.worker.components:Timer"}

    def __init__(self, worker, **kwargs):
        super().__init__(worker, **kwargs)
        self.tref = None
        self.started_at = None

    def start(self, worker):
        from django.conf import settings
        from django.utils import timezone

        self.started_at = timezone.now()
        self.beat(worker)
        self.tref = worker.timer.call_repeatedly(settings.HITL_WORKER_HEARTBEAT_SECONDS, self.beat, (worker,))

    def stop(self, worker):
        if self.tref is not None:
            self.tref.cancel()
            self.tref = None
        from workers.services.heartbeat import worker_heartbeat_clear

        try:
            worker_heartbeat_clear(hostname=worker.hostname)
        except Exception:  # the DB may already be gone at shutdown; the row then just ages out
            log.warning("could not clear the worker heartbeat")

    def beat(self, worker):
        from django.db import close_old_connections

        from workers.services.heartbeat import worker_heartbeat_record

        queues = sorted(q.name for q in worker.app.amqp.queues.consume_from.values()) if worker.app else []
        try:
            worker_heartbeat_record(
                hostname=worker.hostname, queues=queues, pid=os.getpid(), started_at=self.started_at
            )
        except Exception:
            log.exception("heartbeat failed")
        finally:
            close_old_connections()
