"""Export tasks (queue "export" through CELERY_TASK_ROUTES). State and progress live in ExportJob."""

from celery import shared_task

EXPORT_SOFT_LIMIT_S = 3600
EXPORT_HARD_LIMIT_S = EXPORT_SOFT_LIMIT_S + 120


@shared_task(
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=EXPORT_SOFT_LIMIT_S,
    time_limit=EXPORT_HARD_LIMIT_S,
)
def export_job_run(job_id: int) -> None:
    from workers.services.exports.job import export_job_run as run

    run(job_id=job_id)  # idempotent: returns at once unless the job is QUEUED (or a stale RUNNING one)


@shared_task(acks_late=True, soft_time_limit=300, time_limit=360)
def exports_expire() -> int:
    from workers.services.exports.job import export_jobs_expire

    return export_jobs_expire()


@shared_task(acks_late=True, soft_time_limit=60, time_limit=90)
def exports_reap() -> list[int]:
    from workers.services.exports.job import exports_reap as reap

    return reap()  # exports whose worker died: queued again once, then failed
