"""Celery application. Queues: default, ingest, score, explain, train, export (see deploy/)."""

import os
from pathlib import Path
from typing import Any

from celery import Celery
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hitl.settings.local")

app = Celery("hitl")

# The folder options of kombu's filesystem transport (hitl.settings.base sets them for the embedded default).
FILESYSTEM_BROKER_FOLDERS = ("data_folder_in", "data_folder_out", "processed_folder", "control_folder")


@app.on_after_configure.connect(weak=False)
def broker_folders_create(sender: Celery, source: Any, **kwargs: Any) -> None:
    """Make the filesystem broker's folders, which kombu does not create itself, when Celery loads its
    configuration: lazily, before the first publish (the web process publishes through the outbox) and
    when a worker starts; never at settings import."""
    if not str(source.broker_url or "").startswith("filesystem://"):
        return
    options = source.broker_transport_options or {}
    for key in FILESYSTEM_BROKER_FOLDERS:
        if options.get(key):
            Path(options[key]).mkdir(parents=True, exist_ok=True)


app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_queues = [Queue(name) for name in ("default", "ingest", "score", "explain", "train", "export")]
app.conf.task_default_queue = "default"
app.autodiscover_tasks(["hitl.core", "annotations", "workers"], related_name="tasks")

from workers import memory  # noqa: E402, F401  (connects the trim after each task)
from workers.heartbeat import HeartbeatStep  # noqa: E402  (needs the app configured first)

app.steps["worker"].add(HeartbeatStep)
