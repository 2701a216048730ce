from celery import shared_task


@shared_task(acks_late=True, reject_on_worker_lost=True, time_limit=4 * 3600)
def import_job_execute(job_id: int) -> None:
    """Parse and store an import job's files. Each file is bounded by its sandboxed child's limits; a
    redelivery after a lost worker resumes at the first unfinished file."""
    from workers.services.imports import import_job_execute as execute

    execute(job_id=job_id)


@shared_task(acks_late=True)
def import_jobs_reap() -> int:
    from workers.services.imports import import_jobs_reap as reap

    return reap()
