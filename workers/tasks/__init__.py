"""Celery tasks: thin; take ids, call a service. Registered by autodiscovery (workers.tasks)."""

from .explain import explanation_compute
from .imaging import image_analyse
from .scoring import proposal_compute, queue_cold_start_task, scoring_run
from .system import ping
from .training import training_auto_check, training_run_execute, training_runs_reap

__all__ = [
    "explanation_compute",
    "image_analyse",
    "ping",
    "proposal_compute",
    "queue_cold_start_task",
    "scoring_run",
    "training_auto_check",
    "training_run_execute",
    "training_runs_reap",
]
