"""Training tasks (queue "train" through CELERY_TASK_ROUTES, the reaper and the auto-check included)."""

from celery import shared_task
from django.conf import settings

# A CPU run with the defaults takes minutes; the hard limit is the last resort, the soft one lets the
# service end the run FAILED ("time limit") before the worker process is killed.
TRAIN_SOFT_LIMIT_S = 3 * 3600
TRAIN_HARD_LIMIT_S = TRAIN_SOFT_LIMIT_S + 300


@shared_task(
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=TRAIN_SOFT_LIMIT_S,
    time_limit=TRAIN_HARD_LIMIT_S,
)
def training_run_execute(self, run_id: int) -> None:
    from workers.services import training_run

    # Idempotent: returns at once unless the run is QUEUED (or stale RUNNING). In a worker, in a child
    # process (HITL_BATCH_IN_CHILD); an eager call (tests, the web process) runs in the caller.
    if settings.HITL_BATCH_IN_CHILD and not self.request.is_eager:
        training_run.training_run_execute_isolated(run_id=run_id)
    else:
        training_run.training_run_execute(run_id=run_id)


@shared_task(acks_late=True, soft_time_limit=60, time_limit=90)
def training_auto_check(project_id: int) -> None:
    from annotations.models import Project
    from workers.services.training import training_autotrigger

    project = Project.objects.filter(pk=project_id).first()
    if project is not None:
        training_autotrigger(project=project)


@shared_task(acks_late=True, soft_time_limit=60, time_limit=90)
def training_runs_reap() -> list[int]:
    from workers.services.training import training_runs_reap as reap

    return reap()
