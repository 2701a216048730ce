"""Scoring tasks (queue "score"): re-score the pool for the active version, proposals, cold-start order."""

from celery import shared_task


@shared_task(acks_late=True, reject_on_worker_lost=True, soft_time_limit=3000, time_limit=3600)
def scoring_run(project_id: int, version_id: int, run: str = "", chunk: int = 0) -> int:
    from workers.services.scoring import scoring_run as score

    # no-op unless the version is still active and this chunk is due (scoring_chunks)
    return score(project_id=project_id, version_id=version_id, run=run, chunk=chunk)


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
