"""Explanation quality reports on a project's own active model and reference-labelled cases: start
(validate, pick the cases, one open report per project, enqueue after commit) and run (idempotent,
progress in the row, result JSON and plot PNG stored, any failure recorded as FAILED).

Lifecycle: QUEUED -> RUNNING -> SUCCEEDED | FAILED. Only `explanation_report_run` claims a QUEUED report;
a redelivered message for a report that is already RUNNING or finished does nothing. A RUNNING report
older than the task's hard time limit can only belong to a dead worker: the next start marks it FAILED
rather than letting it block the project for ever.
"""

import logging
import math
from datetime import timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from annotations.models import Case, CaseSplit, Project
from hitl.core import task_names
from hitl.core.audit import audit_record
from hitl.core.errors import ConflictError
from hitl.core.outbox import outbox_enqueue
from hitl.core.storage import bytes_save
from workers.ml.device import limit_cpu_threads
from workers.ml.explain_report import (
    KNOWN_METHODS,
    applies_to_arch,
    default_methods,
    plot_png,
    report_build,
)
from workers.models import OPEN_REPORT, ExplanationReport, ModelVersion, ReportStatus
from workers.services.datasets import SliceLoader, labelled_cases, load_mask, num_classes_for
from workers.services.registry import active_version, model_load

log = logging.getLogger(__name__)

RUN_TASK = task_names.EXPLANATION_REPORT
MAX_CASES = 32
CASE_SPLITS = (CaseSplit.TEST, CaseSplit.VALIDATION)  # held-out first; validation tops up
STALE_AFTER = timedelta(hours=3)  # > the task's hard time limit (workers.tasks.explain)


def _num_classes(version: ModelVersion, project: Project) -> int:
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
    *, project: Project, requested_by, methods: list[str] | None = None, max_cases: int = 8
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
    case_ids = _report_cases(project, _num_classes(version, project), max_cases)
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


def _claim(report_id: int) -> ExplanationReport | None:
    """QUEUED -> RUNNING; None when the report is missing or not QUEUED (a redelivery)."""
    now = timezone.now()
    claimed = ExplanationReport.objects.filter(pk=report_id, status=ReportStatus.QUEUED).update(
        status=ReportStatus.RUNNING, started_at=now, progress=0.0
    )
    if not claimed:
        return None
    return ExplanationReport.objects.select_related("project", "model_version").get(pk=report_id)


def _running(report_id: int):
    return ExplanationReport.objects.filter(pk=report_id, status=ReportStatus.RUNNING)


def _json_safe(value: Any) -> Any:
    """NaN and infinities become None (PostgreSQL's jsonb refuses them); containers recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def _cases(report: ExplanationReport) -> list[Case]:
    by_id = {
        c.pk: c
        for c in Case.objects.filter(pk__in=report.case_ids, current_annotation__isnull=False).select_related(
            "image", "current_annotation"
        )
    }
    return [by_id[pk] for pk in report.case_ids if pk in by_id]


def _run_claimed(report: ExplanationReport) -> None:
    limit_cpu_threads()
    model = model_load(report.model_version)
    num_classes = _num_classes(report.model_version, report.project)
    cases = _cases(report)
    if not cases:
        raise ValueError("none of the report's cases still has a reference mask")
    loader = SliceLoader()
    images = [loader.prepared(c) for c in cases]
    masks = [load_mask(c, num_classes) for c in cases]

    def progress(done: int, total: int, method: str) -> None:
        _running(report.pk).update(progress=min(99.0, 100.0 * done / max(1, total)))

    result = _json_safe(report_build(model, images, masks, methods=report.methods, progress=progress))
    result["case_ids"] = [c.pk for c in cases]
    path = bytes_save(
        f"projects/{report.project_id}/explain-reports/report-{report.pk}.png", plot_png(result)
    )
    _running(report.pk).update(
        status=ReportStatus.SUCCEEDED,
        progress=100.0,
        result=result,
        plot_path=path,
        finished_at=timezone.now(),
    )


def explanation_report_run(*, report_id: int) -> ExplanationReport | None:
    """Compute a QUEUED report. Idempotent: returns at once (doing nothing) unless it is QUEUED. Any
    exception ends it FAILED with the reason and is not re-raised, so a broken report never loops through
    redeliveries. A report whose version is no longer active still completes: it is about that version."""
    report = _claim(report_id)
    if report is not None:
        try:
            _run_claimed(report)
        except Exception as exc:
            log.exception("explanation report %s failed", report_id)
            _running(report_id).update(
                status=ReportStatus.FAILED,
                error=f"{type(exc).__name__}: {str(exc)[:1000]}",
                finished_at=timezone.now(),
            )
    return ExplanationReport.objects.filter(pk=report_id).first()
