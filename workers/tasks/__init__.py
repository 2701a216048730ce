"""Celery tasks: thin; take ids, call a service. Registered by autodiscovery (workers.tasks)."""

from .agreement import agreement_update, agreements_reconcile
from .explain import explanation_compute, explanation_report_task
from .export import export_job_run, exports_expire
from .imaging import image_analyse
from .ingest import import_job_execute, import_jobs_reap
from .scoring import proposal_compute, queue_cold_start_task, scoring_run
from .system import ping
from .training import training_auto_check, training_run_execute, training_runs_reap

__all__ = [
    "agreement_update",
    "agreements_reconcile",
    "explanation_compute",
    "explanation_report_task",
    "export_job_run",
    "exports_expire",
    "image_analyse",
    "import_job_execute",
    "import_jobs_reap",
    "ping",
    "proposal_compute",
    "queue_cold_start_task",
    "scoring_run",
    "training_auto_check",
    "training_run_execute",
    "training_runs_reap",
]
