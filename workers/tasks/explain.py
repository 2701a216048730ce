"""Explanation tasks (queue "explain")."""

from celery import shared_task


@shared_task(
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=2,
    soft_time_limit=1800,
    time_limit=2000,
)
def explanation_compute(self, version_id: int, case_ids: list[int], methods: list[str] | None = None) -> int:
    from workers.services.proposals import explanations_compute

    return explanations_compute(version_id=version_id, case_ids=case_ids, methods=methods)  # skips done ones
