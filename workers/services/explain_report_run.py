"""Run a queued explanation quality report (the worker side: loads the model, imports torch). Starting one
is workers.services.explain_report, which the web process uses."""

import logging
import math
from typing import Any

from django.db.models import F
from django.utils import timezone

from annotations.models import Case
from hitl.core.storage import bytes_save, delete_quietly
from workers.ml.explain.report import plot_png, report_build
from workers.ml.models.device import limit_cpu_threads
from workers.models import ExplanationReport, ReportStatus
from workers.selectors.datasets import load_mask
from workers.services.datasets import loader_for
from workers.services.explain_report import num_classes_of
from workers.services.weights import model_load

log = logging.getLogger(__name__)


def _claim(report_id: int) -> ExplanationReport | None:
    """QUEUED -> RUNNING; None when the report is missing or not QUEUED (a redelivery)."""
    now = timezone.now()
    claimed = ExplanationReport.objects.filter(pk=report_id, status=ReportStatus.QUEUED).update(
        status=ReportStatus.RUNNING,
        started_at=now,
        heartbeat_at=now,
        attempts=F("attempts") + 1,
    )
    if not claimed:
        return None
    return ExplanationReport.objects.select_related("project", "model_version").get(pk=report_id)


def _running(report_id: int):
    return ExplanationReport.objects.filter(pk=report_id, status=ReportStatus.RUNNING)


class ReportStopped(Exception):
    """The report is no longer RUNNING under this worker (cancelled, or reaped as lost): stop, write nothing."""


def _checkpoint(report: ExplanationReport, case_ids: list[int]):
    """on_row for report_build: store each new (method, case) row with the progress and heartbeat, in one
    conditional write; ReportStopped when the report is no longer RUNNING. `partial` is
    {"case_ids": [...], "rows": {method: [row of each of its first cases]}}."""
    rows: dict[str, list] = {m: list(r) for m, r in _done_rows(report, case_ids).items()}
    total = len(report.methods) * len(case_ids)

    def on_row(method: str, index: int, row: dict) -> None:
        rows.setdefault(method, []).append(_json_safe(row))
        done = sum(len(r) for r in rows.values())
        updated = _running(report.pk).update(
            partial={"case_ids": case_ids, "rows": rows},
            progress=min(99.0, 100.0 * done / max(1, total)),
            heartbeat_at=timezone.now(),
        )
        if not updated:
            raise ReportStopped

    return on_row


def _done_rows(report: ExplanationReport, case_ids: list[int]) -> dict[str, list]:
    """The rows an earlier attempt checkpointed, when it worked on the same cases (else none)."""
    partial = report.partial or {}
    if partial.get("case_ids") != case_ids:
        return {}
    return {m: r for m, r in (partial.get("rows") or {}).items() if m in report.methods}


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
    num_classes = num_classes_of(report.model_version, report.project)
    cases = _cases(report)
    if not cases:
        raise ValueError("none of the report's cases still has a reference mask")
    loader = loader_for(report.model_version.config)
    images = [loader.prepared(c) for c in cases]
    masks = [load_mask(c, num_classes) for c in cases]

    case_ids = [c.pk for c in cases]
    done_rows = _done_rows(report, case_ids)
    on_row = _checkpoint(report, case_ids)
    result = _json_safe(
        report_build(model, images, masks, methods=report.methods, done_rows=done_rows, on_row=on_row)
    )
    result["case_ids"] = case_ids
    path = bytes_save(
        f"projects/{report.project_id}/explain-reports/report-{report.pk}.png", plot_png(result)
    )
    finished = _running(report.pk).update(
        status=ReportStatus.SUCCEEDED,
        progress=100.0,
        result=result,
        plot_path=path,
        finished_at=timezone.now(),
    )
    if not finished:  # cancelled after its last row
        delete_quietly([path])


def explanation_report_run(*, report_id: int) -> ExplanationReport | None:
    """Compute a QUEUED report, resuming after its checkpointed rows (`partial`), stopping at the next row
    once it is cancelled. Idempotent: returns at once (doing nothing) unless it is QUEUED. Any
    exception ends it FAILED with the reason and is not re-raised, so a broken report never loops through
    redeliveries. A report whose version is no longer active still completes: it is about that version."""
    report = _claim(report_id)
    if report is not None:
        try:
            _run_claimed(report)
        except ReportStopped:
            log.info("explanation report %s stopped: no longer running (cancelled or reaped)", report_id)
        except Exception as exc:
            log.exception("explanation report %s failed", report_id)
            _running(report_id).update(
                status=ReportStatus.FAILED,
                error=f"{type(exc).__name__}: {str(exc)[:1000]}",
                finished_at=timezone.now(),
            )
    return ExplanationReport.objects.filter(pk=report_id).first()
