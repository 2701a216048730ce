"""Scoring tasks (queue "score"): re-score the pool for the active version, proposals, cold-start order."""

from celery import shared_task

# The batch tasks below run their body in a child process in a worker with HITL_BATCH_IN_CHILD on
# (workers.isolation.task_body_run: what they allocate goes back to the OS when it ends).


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, soft_time_limit=3000, time_limit=3600)
def scoring_run(self, project_id: int, version_id: int, run: str = "", chunk: int = 0) -> int | None:
    from workers.isolation import task_body_run
    from workers.services.scoring import scoring_run as score

    # No-op unless the version is still active and this chunk is due (scoring_chunks).
    return task_body_run(self, score, project_id=project_id, version_id=version_id, run=run, chunk=chunk)


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, soft_time_limit=900, time_limit=1000)
def proposal_compute(self, version_id: int, case_ids: list[int]) -> int | None:
    from workers.isolation import task_body_run
    from workers.services.proposals import proposals_compute

    # Skips cases already done. On the interactive lane (a reader waits) always in the worker's process.
    return task_body_run(self, proposals_compute, version_id=version_id, case_ids=case_ids)


@shared_task(acks_late=True, reject_on_worker_lost=True, soft_time_limit=900, time_limit=1000)
def queue_cold_start_task(project_id: int) -> int:
    from annotations.models import Project
    from workers.services.scoring import queue_cold_start

    project = Project.objects.filter(pk=project_id).first()
    return queue_cold_start(project=project) if project is not None else 0
