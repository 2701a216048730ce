"""kill -9 the worker during pool scoring, an explanation report, an export and an agreement update (issue
16's drill): after a restart each completes exactly once.

A worker of this test's own consumes every queue while the session's worker (if one is running) stops
consuming them (`celery control cancel_consumer`, restored at the end), so the tasks go where production
sends them: the outbox and the configured routes, nothing re-routed. The worker is frozen (SIGSTOP) the
moment the work is seen half done and then killed with SIGKILL, so the kill always lands mid-work. Its
unacknowledged message comes back after the broker's visibility timeout (5 s here, 900 s by default:
HITL_BROKER_VISIBILITY_SECONDS) and the restarted worker runs beat, whose outbox sweep sends whatever the
dead worker had written but not yet sent, whose reapers queue a lost export or report again (their stale
horizon shortened here), and whose agreement reconciler sends a lost agreement update again."""

import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from django.conf import settings
from django.db import transaction

from annotations.models import Agreement, Case, CaseSplit, Role
from hitl.core import task_names
from hitl.core.models import OutboxMessage
from hitl.core.outbox import outbox_enqueue
from tests.factories import MembershipFactory, ProjectFactory, TrainingSettingsFactory, UserFactory
from tests.integration.conftest import OwnWorker, wait_until
from tests.workers.test_training_helpers import add_case, annotate, make_version
from workers.ml.research.phantoms import PhantomSpec, make_phantoms
from workers.models import (
    CaseScore,
    ExplanationReport,
    ExportJob,
    ExportStatus,
    ModelVersion,
    Prediction,
    ReportStatus,
    VersionState,
)
from workers.services import explain_report
from workers.services.explain_report import explanation_report_start, explanation_reports_reap
from workers.services.exports import job as export_job
from workers.services.exports.job import export_job_create, exports_reap

pytestmark = pytest.mark.django_db(transaction=True)

SPEC = PhantomSpec(size=(128, 128), modality="MR", num_classes=3, max_objects=2)
CHUNK = 4  # pool cases per scoring task in this test
POOL = 24  # 6 chunks
VISIBILITY_S = 5


@pytest.fixture
def worker(services, session_worker_paused, tmp_path):
    own = OwnWorker(
        tmp_path,
        HITL_BROKER_VISIBILITY_SECONDS=str(VISIBILITY_S),
        HITL_SCORING_CHUNK_CASES=str(CHUNK),
        HITL_AGREEMENT_RECONCILE_SECONDS="1",
    )
    own.start()
    yield own
    own.end()


def _project(n_pool: int, n_labelled: int):
    project = ProjectFactory()
    TrainingSettingsFactory(project=project, query_strategy="entropy")
    ml = UserFactory()
    MembershipFactory(project=project, user=ml, role=Role.ML_ENGINEER)
    batch = make_phantoms(n_pool + n_labelled, seed=3, spec=SPEC)
    for i in range(n_pool + n_labelled):
        split = CaseSplit.POOL if i < n_pool else (CaseSplit.TEST if i % 2 else CaseSplit.VALIDATION)
        mask = None if i < n_pool else batch.masks[i]
        add_case(project, user=ml, image=batch.images[i], mask=mask, split=split)
    version = make_version(project, number=1, state=VersionState.ACTIVE)
    version.config["scoring"]["mc_samples"] = 16  # each chunk takes a while: the kill lands mid-scoring
    version.save(update_fields=["config"])
    return project, ml, version


def _scoring(version: ModelVersion) -> dict:
    return ModelVersion.objects.get(pk=version.pk).scoring


def _chunk_files(project) -> list[Path]:
    return list((Path(settings.MEDIA_ROOT) / f"projects/{project.pk}/scoring").rglob("*.npz"))


def test_kill_9_during_pool_scoring_then_a_restarted_worker_ranks_the_pool_once(worker):
    project, _ml, version = _project(POOL, 0)
    with transaction.atomic():
        outbox_enqueue(
            task=task_names.SCORING_RUN, kwargs={"project_id": project.pk, "version_id": version.pk}
        )
    wait_until(lambda: _scoring(version).get("done", 0) >= 2 * CHUNK, timeout=120, interval=0.05)
    worker.freeze_and_kill()
    at_kill = _scoring(version)
    assert at_kill["chunk"] == CHUNK and not at_kill["finished_at"], at_kill
    assert 2 * CHUNK <= at_kill["done"] < POOL
    assert not CaseScore.objects.filter(model_version=version).exists()  # nothing ranked half

    worker.start()  # the restart: the lost chunk comes back after the visibility timeout

    def state() -> str:
        unsent = OutboxMessage.objects.filter(sent_at__isnull=True).count()
        return (
            f"scoring {_scoring(version)}, {unsent} outbox message(s) unsent, worker alive {worker.alive()}"
        )

    wait_until(lambda: _scoring(version).get("done", 0) > at_kill["done"], 120, 0.5, state)  # redelivered
    wait_until(lambda: bool(_scoring(version).get("finished_at")), 240, 0.5, state)
    done = _scoring(version)
    assert (done["done"], done["total"], done["run"], done.get("stopped")) == (
        POOL,
        POOL,
        at_kill["run"],
        None,
    )
    pool = set(Case.objects.filter(project=project, split=CaseSplit.POOL).values_list("pk", flat=True))
    scores = list(CaseScore.objects.filter(model_version=version).values_list("case_id", "rank"))
    assert sorted(c for c, _r in scores) == sorted(pool)  # every case once
    assert sorted(r for _c, r in scores) == list(range(1, POOL + 1))  # one ranking
    assert _chunk_files(project) == []
    priorities = Case.objects.filter(pk__in=pool).values_list("priority", flat=True)
    assert len(set(priorities)) == POOL  # the queue order is written for every case
    wait_until(lambda: Prediction.objects.filter(model_version=version).count() >= POOL, timeout=240)
    assert Prediction.objects.filter(model_version=version).count() == POOL  # one proposal per case
    print(
        f"\nscoring kill: killed after {at_kill['done']}/{POOL} cases ({at_kill['done'] // CHUNK} of "
        f"{POOL // CHUNK} chunks); after the restart {len(scores)} scores, {POOL} proposals, 0 chunk files"
    )


def test_kill_9_during_an_explanation_report_then_it_resumes_and_completes_once(worker, monkeypatch):
    project, ml, version = _project(1, 6)
    methods = ["saliency", "smoothgrad"]
    report = explanation_report_start(project=project, requested_by=ml, methods=methods, max_cases=6)
    rows_total = len(methods) * len(report.case_ids)

    def rows_done() -> int:
        partial = ExplanationReport.objects.get(pk=report.pk).partial or {}
        return sum(len(v) for v in (partial.get("rows") or {}).values())

    wait_until(lambda: rows_done() >= 2, timeout=180, interval=0.05)
    worker.freeze_and_kill()
    report.refresh_from_db()
    at_kill = rows_done()
    assert report.status == ReportStatus.RUNNING and report.attempts == 1
    assert 2 <= at_kill < rows_total, (at_kill, rows_total)

    monkeypatch.setattr(explain_report, "REPORT_STALE_AFTER", timedelta(seconds=1))  # 10 min in production
    wait_until(lambda: explanation_reports_reap() == [report.pk], timeout=30, interval=0.5)
    worker.start()
    wait_until(
        lambda: ExplanationReport.objects.get(pk=report.pk).status not in ("queued", "running"), timeout=300
    )
    report.refresh_from_db()
    assert report.status == ReportStatus.SUCCEEDED and report.attempts == 2, report.error
    assert set(report.result["methods"]) == set(methods) and report.result["case_ids"] == report.case_ids
    plots = list((Path(settings.MEDIA_ROOT) / f"projects/{project.pk}/explain-reports").iterdir())
    assert [p.name for p in plots] == [f"report-{report.pk}.png"]
    assert ExplanationReport.objects.filter(project=project).count() == 1
    print(f"\nreport kill: killed after {at_kill}/{rows_total} rows; resumed and completed on attempt 2")


def test_kill_9_during_an_export_then_it_is_queued_again_and_stored_once(worker, monkeypatch):
    project, ml, _version = _project(0, 0)
    batch = make_phantoms(120, seed=5, spec=PhantomSpec(size=(256, 256), modality="MR", num_classes=3))
    for image, mask in zip(batch.images, batch.masks, strict=True):
        add_case(project, user=ml, image=image, mask=mask, split=CaseSplit.TRAIN)
    job = export_job_create(
        project=project, requested_by=ml, formats=["nifti", "png", "coco"], include_images=True
    )
    exports = Path(settings.MEDIA_ROOT) / f"exports/project-{project.pk}"

    def zips() -> list[str]:
        return sorted(p.name for p in exports.glob("*")) if exports.exists() else []

    wait_until(lambda: ExportJob.objects.get(pk=job.pk).progress > 0, timeout=120, interval=0.05)
    worker.freeze_and_kill()
    job.refresh_from_db()
    at_kill = job.progress
    assert job.status == ExportStatus.RUNNING and 0 < at_kill < 100, (job.status, at_kill)
    assert zips() == []  # the zip is built in a temporary file: nothing half-written is stored

    monkeypatch.setattr(export_job, "STALE_AFTER", timedelta(seconds=1))  # 5 min in production
    wait_until(lambda: exports_reap() == [job.pk], timeout=30, interval=0.5)
    worker.start()
    wait_until(lambda: ExportJob.objects.get(pk=job.pk).status not in ("queued", "running"), timeout=300)
    job.refresh_from_db()
    assert job.status == ExportStatus.SUCCEEDED and job.attempts == 2, job.error
    assert len(zips()) == 1 and job.result_path.endswith(zips()[0])  # one zip, the one on record
    assert job.counts["masks"] == 120, job.counts
    print(
        f"\nexport kill: killed at {at_kill:.1f} %; queued again, stored once on attempt 2 ({job.size_bytes} B)"
    )


def test_kill_9_while_an_agreement_update_is_due_then_it_is_computed_once(worker):
    project, ml, _version = _project(0, 0)
    case = add_case(project, user=ml, image=np.zeros((64, 64), np.float32), mask=None, split=CaseSplit.POOL)
    for i in range(2):
        mask = np.zeros((64, 64), np.uint8)
        mask[10 : 40 + i, 10:40] = 1
        annotate(case, mask=mask, user=UserFactory())
    worker.freeze()  # frozen, the update is sent: the dying worker may already hold it
    with transaction.atomic():
        outbox_enqueue(task=task_names.AGREEMENT_UPDATE, kwargs={"case_id": case.pk})
    time.sleep(1.0)
    worker.freeze_and_kill()
    assert not Agreement.objects.filter(case=case).exists()

    worker.start()  # the message comes back, or the reconciler (beat, every minute) sends it again
    wait_until(lambda: Agreement.objects.filter(case=case).exists(), timeout=150, interval=0.5)
    time.sleep(VISIBILITY_S + 2.0)  # a late copy of the message would land now
    assert Agreement.objects.filter(case=case).count() == 1
    assert case.annotations.filter(kind="consensus").count() == 1
    sent = OutboxMessage.objects.filter(task=task_names.AGREEMENT_UPDATE, kwargs__case_id=case.pk).count()
    print(f"\nagreement kill: computed once after the restart; the update was sent {sent} times")
