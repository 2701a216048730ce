"""Explanation quality reports on a project's own active model and reference-labelled cases: start
(validate, pick the cases, one open report per project, enqueue after commit) and run (idempotent,
progress in the row, result JSON and plot PNG stored, any failure recorded as FAILED).

Lifecycle: QUEUED -> RUNNING -> SUCCEEDED | FAILED. Only `explanation_report_run` claims a QUEUED report;
a redelivered message for a report that is already RUNNING or finished does nothing. A RUNNING report
that wrote no progress for REPORT_STALE_AFTER lost its worker: the beat task `explanation_reports_reap`
queues it again once, then fails it; one older than the task's hard time limit is failed by the next start
rather than letting it block the project for ever.
"""

import logging
from datetime import timedelta

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from annotations.models import CaseSplit, Project
from hitl.core import task_names
from hitl.core.audit import audit_record
from hitl.core.errors import ConflictError
from hitl.core.outbox import outbox_enqueue
from hitl.core.types import User
from workers.ml.explain.policy import ALL_METHODS as KNOWN_METHODS
from workers.ml.explain.policy import applies_to_arch, default_methods
from workers.models import OPEN_REPORT, ExplanationReport, ModelVersion, ReportStatus
from workers.selectors.datasets import labelled_cases, load_mask
from workers.services.lost_jobs import reap_lost
from workers.services.registry import active_version
from workers.services.training_config import num_classes_for

log = logging.getLogger(__name__)

RUN_TASK = task_names.EXPLANATION_REPORT
MAX_CASES = 32
CASE_SPLITS = (CaseSplit.TEST, CaseSplit.VALIDATION)  # held-out first; validation tops up
STALE_AFTER = timedelta(hours=3)  # > the task's hard time limit (workers.tasks.explain)


def num_classes_of(version: ModelVersion, project: Project) -> int:
    return int(version.config.get("network", {}).get("num_classes") or num_classes_for(project))


def _methods_validate(methods: list[str] | None, arch: str) -> list[str]:
    """Distinct known names, at least one applicable to `arch`; None = the catalogue for `arch`."""
    if methods is None:
        return default_methods(arch)
    if not isinstance(methods, list) or not methods or len(set(methods)) != len(methods):
        raise ValidationError({"methods": ["give a non-empty list of distinct explanation methods"]})
    unknown = [m for m in methods if m not in KNOWN_METHODS]
    if unknown:
        raise ValidationError({"methods": [f"unknown methods {unknown}; choose from {list(KNOWN_METHODS)}"]})
    if not any(applies_to_arch(m, arch) for m in methods):  # the active model decides: a state, not the input
        raise ConflictError(
            "method_unavailable", f"none of {methods} can explain the active model (arch {arch})"
        )
    return list(methods)


def _report_cases(project: Project, num_classes: int, max_cases: int) -> list[int]:
    """Up to `max_cases` labelled TEST cases, then VALIDATION ones, whose mask has foreground."""
    out: list[int] = []
    for split in CASE_SPLITS:
        for case in labelled_cases(project=project, splits=[split]):
            if len(out) >= max_cases:
                return out
            if load_mask(case, num_classes).any():
                out.append(case.pk)
    return out


def _expire_stale(project: Project) -> None:
    ExplanationReport.objects.filter(
        project=project, status=ReportStatus.RUNNING, started_at__lt=timezone.now() - STALE_AFTER
    ).update(status=ReportStatus.FAILED, error="worker lost: the report ran past its time limit")


def _open_conflict() -> ConflictError:
    return ConflictError("report_open", "this project already has a queued or running explanation report")


@transaction.atomic
def explanation_report_start(
    *, project: Project, requested_by: User, methods: list[str] | None = None, max_cases: int = 8
) -> ExplanationReport:
    """Create a QUEUED report on the active version and enqueue its run after commit.
    Raises ConflictError "no_model" (no active version) or "report_open" (one is queued or running), and
    ValidationError for bad methods, a bad max_cases, or no reference-labelled case with foreground."""
    version = active_version(project=project)
    if version is None:
        raise ConflictError("no_model", "this project has no active model version to report on yet")
    if isinstance(max_cases, bool) or not isinstance(max_cases, int) or not 1 <= max_cases <= MAX_CASES:
        raise ValidationError({"max_cases": [f"max_cases must be an integer in 1..{MAX_CASES}"]})
    methods = _methods_validate(methods, version.arch)
    _expire_stale(project)
    if ExplanationReport.objects.filter(project=project, status__in=OPEN_REPORT).exists():
        raise _open_conflict()
    case_ids = _report_cases(project, num_classes_of(version, project), max_cases)
    if not case_ids:
        raise ValidationError(
            {"cases": ["no test or validation case has a reference mask with foreground to report on"]}
        )
    try:
        with transaction.atomic():
            report = ExplanationReport.objects.create(
                project=project,
                model_version=version,
                requested_by=requested_by if getattr(requested_by, "is_authenticated", False) else None,
                methods=methods,
                case_ids=case_ids,
            )
    except IntegrityError as exc:  # a concurrent start won the race
        raise _open_conflict() from exc
    audit_record(
        actor=requested_by,
        action="explanation_report.start",
        project=project,
        target=report,
        details={"model_version": version.pk, "methods": methods, "cases": len(case_ids)},
    )
    outbox_enqueue(task=RUN_TASK, kwargs={"report_id": report.pk})
    return report


@transaction.atomic
def explanation_report_cancel(*, report: ExplanationReport, actor: User) -> ExplanationReport:
    """Cancel a queued or running report (ConflictError "report_ended" otherwise). A running one stops
    after the (method, case) row it is computing: its worker finds it no longer RUNNING at the next
    checkpoint and writes nothing more. The project may start another report at once."""
    cancelled = ExplanationReport.objects.filter(pk=report.pk, status__in=OPEN_REPORT).update(
        status=ReportStatus.CANCELLED, finished_at=timezone.now()
    )
    report.refresh_from_db()
    if not cancelled:
        raise ConflictError("report_ended", f"the report has already ended ({report.status})")
    audit_record(actor=actor, action="explanation_report.cancel", project=report.project, target=report)
    return report


REPORT_STALE_AFTER = timedelta(minutes=10)  # one method on one case may take minutes; none takes ten


def explanation_reports_reap() -> list[int]:
    """Reports whose worker died (no progress for REPORT_STALE_AFTER): queued again once, then failed. A
    report queued again resumes after its last checkpointed row; its result is one final write. Returns
    their ids."""
    return reap_lost(
        ExplanationReport,
        stale_after=REPORT_STALE_AFTER,
        task=task_names.EXPLANATION_REPORT,
        kwarg="report_id",
        what="explanation report",
    )
