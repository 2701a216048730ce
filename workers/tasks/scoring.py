"""Scoring tasks (queue "score"): re-score the pool for the active version, proposals, cold-start order."""

from typing import Any

from celery import shared_task
from django.conf import settings


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, soft_time_limit=3000, time_limit=3600)
def scoring_run(self, project_id: int, version_id: int, run: str = "", chunk: int = 0) -> int | None:
    from workers.isolation import run_in_child
    from workers.services.scoring import scoring_run as score

    # No-op unless the version is still active and this chunk is due (scoring_chunks). In a worker, in a
    # child process (HITL_BATCH_IN_CHILD: what a chunk allocates goes back to the OS); a child that died
    # (out of memory) is retried once, as a redelivery after a worker's death would be.
    kwargs: dict[str, Any] = {"project_id": project_id, "version_id": version_id, "run": run, "chunk": chunk}
    if not settings.HITL_BATCH_IN_CHILD or self.request.is_eager:
        return score(**kwargs)
    if run_in_child(score, **kwargs) != 0:
        raise self.retry(countdown=5, max_retries=1)
    return None


@shared_task(acks_late=True, reject_on_worker_lost=True, soft_time_limit=900, time_limit=1000)
def proposal_compute(version_id: int, case_ids: list[int]) -> int:
    from workers.services.proposals import proposals_compute

    return proposals_compute(version_id=version_id, case_ids=case_ids)  # skips cases already done


@shared_task(acks_late=True, reject_on_worker_lost=True, soft_time_limit=900, time_limit=1000)
def queue_cold_start_task(project_id: int) -> int:
    from annotations.models import Project
    from workers.services.scoring import queue_cold_start

    project = Project.objects.filter(pk=project_id).first()
    return queue_cold_start(project=project) if project is not None else 0
