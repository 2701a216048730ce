"""Celery application. Queues: default, ingest, score, explain, train, export (see deploy/)."""

import os

from celery import Celery
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hitl.settings.local")

app = Celery("hitl")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_queues = [Queue(name) for name in ("default", "ingest", "score", "explain", "train", "export")]
app.conf.task_default_queue = "default"
app.autodiscover_tasks(["hitl.core", "annotations", "workers"], related_name="tasks")

from workers.heartbeat import HeartbeatStep  # noqa: E402  (needs the app configured first)

app.steps["worker"].add(HeartbeatStep)
