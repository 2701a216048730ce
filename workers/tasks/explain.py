"""Explanation tasks (queue "explain")."""

from celery import shared_task


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, soft_time_limit=1800, time_limit=2000)
def explanation_compute(
    self, version_id: int, case_ids: list[int], methods: list[str] | None = None
) -> int | None:
    from workers.isolation import task_body_run
    from workers.services.proposals import explanations_compute

    # Skips the ones done. In a child process on the batch lane (workers.isolation), here on the interactive one.
    return task_body_run(
        self, explanations_compute, version_id=version_id, case_ids=case_ids, methods=methods
    )


# The whole catalogue on 8 cases of a large image runs for many minutes on a CPU; the soft limit lets the
# service record the report FAILED ("time limit") before the hard one kills the worker process.
REPORT_SOFT_LIMIT_S = 2 * 3600
REPORT_HARD_LIMIT_S = REPORT_SOFT_LIMIT_S + 300


@shared_task(
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=REPORT_SOFT_LIMIT_S,
    time_limit=REPORT_HARD_LIMIT_S,
)
def explanation_report_task(report_id: int) -> None:
    from workers.services.explain_report_run import explanation_report_run

    explanation_report_run(report_id=report_id)  # idempotent: does nothing unless the report is QUEUED


@shared_task(acks_late=True, soft_time_limit=60, time_limit=90)
def explanation_reports_reap() -> list[int]:
    from workers.services.explain_report import explanation_reports_reap as reap

    return reap()  # reports whose worker died: queued again once, then failed
