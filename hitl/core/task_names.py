"""Every Celery task, by name. Services enqueue by name through the outbox, so no service imports a task
module (no services <-> tasks import loop) and the web process never imports what a task needs (torch).
A test checks that this list and the tasks Celery registers are the same."""

LEASES_EXPIRE = "annotations.tasks.leases_expire"
OUTBOX_SWEEP = "hitl.core.tasks.outbox_sweep"
AGREEMENT_UPDATE = "workers.tasks.agreement.agreement_update"
AGREEMENTS_RECONCILE = "workers.tasks.agreement.agreements_reconcile"
EXPLANATION_COMPUTE = "workers.tasks.explain.explanation_compute"
EXPLANATION_REPORT = "workers.tasks.explain.explanation_report_task"
EXPLANATION_REPORTS_REAP = "workers.tasks.explain.explanation_reports_reap"
EXPORT_JOB_RUN = "workers.tasks.export.export_job_run"
EXPORTS_EXPIRE = "workers.tasks.export.exports_expire"
EXPORTS_REAP = "workers.tasks.export.exports_reap"
IMAGE_ANALYSE = "workers.tasks.imaging.image_analyse"
IMPORT_JOB_EXECUTE = "workers.tasks.ingest.import_job_execute"
IMPORT_JOBS_REAP = "workers.tasks.ingest.import_jobs_reap"
PING = "workers.tasks.system.ping"
PROPOSAL_COMPUTE = "workers.tasks.scoring.proposal_compute"
QUEUE_COLD_START = "workers.tasks.scoring.queue_cold_start_task"
SCORING_RUN = "workers.tasks.scoring.scoring_run"
TRAINING_AUTO_CHECK = "workers.tasks.training.training_auto_check"
TRAINING_RUN_EXECUTE = "workers.tasks.training.training_run_execute"
TRAINING_RUNS_REAP = "workers.tasks.training.training_runs_reap"

ALL_TASKS = frozenset(v for k, v in dict(globals()).items() if k.isupper() and isinstance(v, str))
