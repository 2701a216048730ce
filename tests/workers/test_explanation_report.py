"""Explanation quality reports as a service feature: start -> (outbox, eager task) -> run on the project's
own active model and reference cases -> result JSON and plot PNG; the guards (no model, one open report,
no reference cases, bad methods), idempotent redelivery, failures recorded, and the API's permissions."""

from datetime import timedelta

import numpy as np
import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from annotations.models import CaseSplit, Role
from hitl.celery import app
from hitl.core.errors import ConflictError
from hitl.core.models import AuditEvent, OutboxMessage
from hitl.core.storage import bytes_load
from tests.factories import UserFactory
from tests.workers.test_training_helpers import add_case, make_version, seed_project
from workers.ml.explain import report as ml_report
from workers.models import ExplanationReport, ReportStatus, VersionState
from workers.selectors.explain_report import explanation_report_list
from workers.services.explain_report import explanation_report_start
from workers.services.explain_report_run import explanation_report_run

FAST = ["saliency", "uncertainty"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def ml(member):
    return member(Role.ML_ENGINEER)


@pytest.fixture
def cases(project, ml):
    """One labelled test case, two labelled validation cases, one unlabelled pool case."""
    return seed_project(project, ml, n_train=0, n_val=2, n_test=1, n_pool=1)


@pytest.fixture
def active(project):
    return make_version(project, number=1, state=VersionState.ACTIVE)


def _start(project, user, **kw):
    return explanation_report_start(project=project, requested_by=user, **{"methods": FAST, **kw})


def test_start_runs_after_commit_and_stores_result_and_plot(
    project, ml, cases, active, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        report = _start(project, ml, methods=["gradcam", "saliency", "attention"], max_cases=2)
    report.refresh_from_db()
    assert report.status == ReportStatus.SUCCEEDED, report.error
    # test split first, then validation tops up; the second validation case is beyond max_cases
    assert report.case_ids == [cases["test"][0].pk, cases["validation"][0].pk]
    assert report.model_version == active and report.progress == 100 and report.requested_by == ml
    assert report.started_at <= report.finished_at
    result = report.result
    assert set(result["methods"]) == {"gradcam", "saliency"} and result["cases"] == 2
    assert "attention gates" in result["skipped"]["attention"]  # a UNet has none: skipped, not failed
    for row in result["methods"].values():
        assert 0 <= row["deletion_auc"] <= 1 and 0 <= row["insertion_auc"] <= 1
        assert row["pointing_game"] in (0.0, 0.5, 1.0) and 0 <= row["energy_inside"] <= 1
        assert row["ms"] > 0 and row["x_forward"] > 0
    assert 0 <= result["surrogate"]["fidelity"] <= 1 and result["surrogate"]["rules"]
    assert bytes_load(report.plot_path)[:8] == PNG_MAGIC
    assert OutboxMessage.objects.get(task="workers.tasks.explain.explanation_report_task").sent_at
    event = AuditEvent.objects.get(action="explanation_report.start")
    assert event.actor == ml and event.target_id == str(report.pk) and event.details["cases"] == 2


def test_the_task_lands_on_the_explain_queue():
    assert (
        app.amqp.router.route({}, "workers.tasks.explain.explanation_report_task")["queue"].name == "explain"
    )


def test_default_methods_are_the_catalogue_for_the_active_arch(project, ml, cases, active):
    report = explanation_report_start(project=project, requested_by=ml)
    assert report.methods == ml_report.default_methods("unet") and "attention" not in report.methods
    assert report.status == ReportStatus.QUEUED  # no commit in this test: nothing ran


def test_an_attention_unet_gets_the_attention_method_by_default(project, ml, cases):
    make_version(project, number=1, state=VersionState.ACTIVE, arch="attention_unet")
    report = explanation_report_start(project=project, requested_by=ml)
    assert report.methods == ml_report.default_methods("attention_unet") and "attention" in report.methods


def test_a_second_start_while_one_is_open_is_report_open(project, ml, cases, active):
    _start(project, ml)
    with pytest.raises(ConflictError) as err:
        _start(project, ml)
    assert err.value.code == "report_open"


def test_a_report_stuck_running_past_the_time_limit_does_not_block_a_new_one(project, ml, cases, active):
    stuck = _start(project, ml)
    ExplanationReport.objects.filter(pk=stuck.pk).update(
        status=ReportStatus.RUNNING, started_at=timezone.now() - timedelta(hours=4)
    )
    fresh = _start(project, ml)
    stuck.refresh_from_db()
    assert stuck.status == ReportStatus.FAILED and "worker lost" in stuck.error
    assert fresh.status == ReportStatus.QUEUED


def test_a_report_whose_worker_died_is_queued_again_once_and_completes_once(project, ml, cases, active):
    from hitl.core.models import OutboxMessage
    from workers.services.explain_report import explanation_reports_reap

    report = _start(project, ml, max_cases=1)
    old = timezone.now() - timedelta(minutes=30)
    ExplanationReport.objects.filter(pk=report.pk).update(
        status=ReportStatus.RUNNING, attempts=1, started_at=old, heartbeat_at=timezone.now()
    )
    assert explanation_reports_reap() == []  # progress is being written: alive
    ExplanationReport.objects.filter(pk=report.pk).update(heartbeat_at=old)  # its worker was killed
    sent = OutboxMessage.objects.filter(task="workers.tasks.explain.explanation_report_task").count()
    assert explanation_reports_reap() == [report.pk]
    report.refresh_from_db()
    assert report.status == ReportStatus.QUEUED
    assert (
        OutboxMessage.objects.filter(task="workers.tasks.explain.explanation_report_task").count() == sent + 1
    )
    done = explanation_report_run(report_id=report.pk)  # the restarted worker
    assert done.status == ReportStatus.SUCCEEDED and done.attempts == 2 and done.plot_path, done.error
    assert (
        explanation_report_run(report_id=report.pk).finished_at == done.finished_at
    )  # a redelivery: nothing
    ExplanationReport.objects.filter(pk=report.pk).update(
        status=ReportStatus.RUNNING, attempts=2, heartbeat_at=old
    )
    assert explanation_reports_reap() == [report.pk]  # lost twice: failed, with the reason
    report.refresh_from_db()
    assert report.status == ReportStatus.FAILED and "worker lost" in report.error


def test_no_active_model_is_no_model(project, ml, cases):
    make_version(project, number=1)  # a candidate only
    with pytest.raises(ConflictError) as err:
        _start(project, ml)
    assert err.value.code == "no_model"


def test_no_reference_case_with_foreground_is_a_validation_error(project, ml, active):
    empty = np.zeros((32, 32), dtype=np.uint8)
    add_case(project, user=ml, image=np.ones((32, 32), np.float32), mask=empty, split=CaseSplit.TEST)
    add_case(project, user=ml, image=np.ones((32, 32), np.float32), mask=None, split=CaseSplit.VALIDATION)
    with pytest.raises(ValidationError) as err:
        _start(project, ml)
    assert "cases" in err.value.message_dict
    assert not ExplanationReport.objects.exists()


@pytest.mark.parametrize(
    "methods, field",
    [
        (["psychic"], "methods"),
        (["saliency", "saliency"], "methods"),
        ([], "methods"),
    ],
)
def test_bad_methods_are_refused(project, ml, cases, active, methods, field):
    with pytest.raises(ValidationError) as err:
        _start(project, ml, methods=methods)
    assert field in err.value.message_dict


def test_methods_the_active_model_cannot_produce_conflict_with_it(project, ml, cases, active):
    """attention on a plain U-Net: valid input, refused because of the active model (a 409 over the API)."""
    with pytest.raises(ConflictError) as err:
        _start(project, ml, methods=["attention"])
    assert err.value.code == "method_unavailable"


def test_a_redelivered_run_does_nothing(project, ml, cases, active, monkeypatch):
    report = _start(project, ml, max_cases=1)
    done = explanation_report_run(report_id=report.pk)
    assert done.status == ReportStatus.SUCCEEDED, done.error

    def must_not_run(*args, **kwargs):
        raise AssertionError("a redelivery recomputed the report")

    monkeypatch.setattr("workers.services.explain_report_run.report_build", must_not_run)
    again = explanation_report_run(report_id=report.pk)
    assert (again.status, again.finished_at, again.plot_path, again.result) == (
        done.status,
        done.finished_at,
        done.plot_path,
        done.result,
    )
    # a report another worker is running is left alone too
    ExplanationReport.objects.filter(pk=report.pk).update(status=ReportStatus.RUNNING, progress=40.0)
    assert explanation_report_run(report_id=report.pk).progress == 40.0
    assert explanation_report_run(report_id=999999) is None


def test_a_failing_method_fails_the_report_with_the_reason(project, ml, cases, active, monkeypatch):
    real = ml_report.explain

    def explain(model, image, method, **kw):
        if method == "uncertainty":
            raise RuntimeError("uncertainty exploded")
        return real(model, image, method, **kw)

    monkeypatch.setattr(ml_report, "explain", explain)
    report = explanation_report_run(report_id=_start(project, ml, max_cases=1).pk)
    assert report.status == ReportStatus.FAILED and report.finished_at
    assert report.error == "RuntimeError: uncertainty exploded"
    assert report.progress == 50.0  # saliency finished before uncertainty failed
    assert report.result == {} and report.plot_path == ""
    assert _start(project, ml).status == ReportStatus.QUEUED  # a failed report does not block the next


def test_a_report_on_a_version_no_longer_active_still_completes(project, ml, cases, active, client_for):
    report = _start(project, ml, max_cases=1)
    active.state = VersionState.RETIRED
    active.save(update_fields=["state"])
    make_version(project, number=2, state=VersionState.ACTIVE)
    assert explanation_report_run(report_id=report.pk).status == ReportStatus.SUCCEEDED
    body = client_for(ml).get(f"/api/v1/explanation-reports/{report.pk}").json()
    assert (body["model_version"], body["model_version_number"]) == (active.pk, 1)
    assert body["model_version_state"] == "retired"


def test_list_query_count_is_flat(project, ml, cases, active, django_assert_max_num_queries):
    for _ in range(3):
        r = _start(project, ml, max_cases=1)
        ExplanationReport.objects.filter(pk=r.pk).update(status=ReportStatus.FAILED)
    with django_assert_max_num_queries(1):
        rows = [
            (r.model_version.number, r.requested_by.username)
            for r in explanation_report_list(project=project)
        ]
    assert len(rows) == 3


# --- API --------------------------------------------------------------------------------------------


def test_api_start_poll_detail_and_plot(
    project, ml, cases, active, client_for, django_capture_on_commit_callbacks
):
    client = client_for(ml)
    url = f"/api/v1/projects/{project.pk}/explanation-reports"
    with django_capture_on_commit_callbacks(execute=True):
        resp = client.post(url, {"methods": FAST, "max_cases": 1}, format="json")
    assert resp.status_code == 201, resp.json()
    assert resp.json()["status"] == "queued" and resp.json()["plot_url"] is None  # as it was at creation
    rid = resp.json()["id"]
    listing = client.get(url).json()
    assert [r["id"] for r in listing["results"]] == [rid] and "result" not in listing["results"][0]
    body = client.get(f"/api/v1/explanation-reports/{rid}").json()
    assert body["status"] == "succeeded" and body["case_ids"] == [cases["test"][0].pk]
    assert set(body["result"]["methods"]) == set(FAST) and body["cases"] == 1
    plot = client.get(body["plot_url"])
    assert plot.status_code == 200 and plot["Content-Type"] == "image/png"
    assert plot.content[:8] == PNG_MAGIC


def test_api_conflicts_and_bad_input(project, ml, cases, client_for):
    client = client_for(ml)
    url = f"/api/v1/projects/{project.pk}/explanation-reports"
    resp = client.post(url, {}, format="json")
    assert resp.status_code == 409 and resp.json()["error"]["code"] == "no_model"
    make_version(project, number=1, state=VersionState.ACTIVE)
    for body in ({"methods": ["psychic"]}, {"max_cases": 0}, {"max_cases": 33}, {"methods": ["gradcam"] * 2}):
        resp = client.post(url, body, format="json")
        assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid", body
    resp = client.post(url, {"methods": ["attention"]}, format="json")  # the active model is a plain U-Net
    assert resp.status_code == 409 and resp.json()["error"]["code"] == "method_unavailable"
    assert client.post(url, {"methods": FAST}, format="json").status_code == 201
    resp = client.post(url, {"methods": FAST}, format="json")
    assert resp.status_code == 409 and resp.json()["error"]["code"] == "report_open"


def test_plot_is_404_until_there_is_one(project, ml, cases, active, client_for):
    report = _start(project, ml)
    resp = client_for(ml).get(f"/api/v1/explanation-reports/{report.pk}/plot.png")
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    "role, read, start",
    [
        (Role.ANNOTATOR, 200, 403),
        (Role.DATA_MANAGER, 200, 403),
        (Role.ML_ENGINEER, 200, 201),
        (Role.ADMIN, 200, 201),
        (None, 404, 404),
    ],
)
def test_permissions(project, other_project, ml, cases, active, member, client_for, role, read, start):
    report = explanation_report_run(report_id=_start(project, ml, max_cases=1).pk)
    if role is None:
        user = UserFactory()
        other_project.memberships.create(user=user, role=Role.ADMIN)  # admin elsewhere is no one here
    else:
        user = member(role)
    client = client_for(user)
    for url in (
        f"/api/v1/projects/{project.pk}/explanation-reports",
        f"/api/v1/explanation-reports/{report.pk}",
        f"/api/v1/explanation-reports/{report.pk}/plot.png",
    ):
        assert client.get(url).status_code == read, url
    resp = client.post(f"/api/v1/projects/{project.pk}/explanation-reports", {"methods": FAST}, format="json")
    assert resp.status_code == start, resp.content[:200]
    assert client.get("/api/v1/explanation-reports/999999").status_code == 404


def test_a_report_resumes_after_its_checkpointed_rows_when_its_worker_died(
    project, ml, cases, active, monkeypatch
):
    from workers.services.explain_report import explanation_reports_reap

    real, computed = ml_report.evaluate_case, []

    class WorkerKilled(BaseException):  # not an Exception: the run does not record it, as with kill -9
        pass

    def evaluate_case(model, method, image, ref, target, **kw):
        if len(computed) == 3 and not resumed:
            raise WorkerKilled
        computed.append(method)
        return real(model, method, image, ref, target, **kw)

    monkeypatch.setattr(ml_report, "evaluate_case", evaluate_case)
    resumed = False
    report = _start(project, ml, max_cases=2)  # 2 methods x 2 cases = 4 rows
    with pytest.raises(WorkerKilled):
        explanation_report_run(report_id=report.pk)
    report.refresh_from_db()
    assert report.status == ReportStatus.RUNNING and report.progress == 75.0
    assert report.partial["case_ids"] == report.case_ids
    assert [len(report.partial["rows"][m]) for m in FAST] == [2, 1]
    ExplanationReport.objects.filter(pk=report.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))
    assert explanation_reports_reap() == [report.pk]
    resumed = True
    done = explanation_report_run(report_id=report.pk)
    assert done.status == ReportStatus.SUCCEEDED and done.attempts == 2, done.error
    assert computed == ["saliency", "saliency", "uncertainty", "uncertainty"]  # the fourth row only, again
    assert set(done.result["methods"]) == set(FAST) and done.result["cases"] == 2


def test_cancelling_a_running_report_stops_it_at_the_next_row_and_frees_the_project(
    project, ml, cases, active, monkeypatch
):
    from workers.services.explain_report import explanation_report_cancel

    real, computed = ml_report.evaluate_case, []

    def evaluate_case(model, method, image, ref, target, **kw):
        computed.append(method)
        if len(computed) == 2:  # the ML engineer presses Cancel while the second row is computed
            explanation_report_cancel(report=ExplanationReport.objects.get(pk=report.pk), actor=ml)
        return real(model, method, image, ref, target, **kw)

    monkeypatch.setattr(ml_report, "evaluate_case", evaluate_case)
    report = _start(project, ml, max_cases=2)
    done = explanation_report_run(report_id=report.pk)
    assert done.status == ReportStatus.CANCELLED and done.finished_at
    assert len(computed) == 2 and done.result == {} and done.plot_path == "" and done.error == ""
    assert len(done.partial["rows"]["saliency"]) == 1  # the row finished after the cancel was not stored
    assert AuditEvent.objects.filter(action="explanation_report.cancel", actor=ml).count() == 1
    with pytest.raises(ConflictError, match="already ended"):
        explanation_report_cancel(report=done, actor=ml)
    assert _start(project, ml).status == ReportStatus.QUEUED  # a cancelled report does not block the next


@pytest.mark.parametrize("role, status", [(Role.ANNOTATOR, 403), (Role.ML_ENGINEER, 200), (None, 404)])
def test_api_cancel_permissions_and_a_second_cancel_is_409(
    project, other_project, ml, cases, active, member, client_for, role, status
):
    report = _start(project, ml, max_cases=1)
    user = member(role) if role else UserFactory()
    if role is None:
        other_project.memberships.create(user=user, role=Role.ADMIN)
    resp = client_for(user).post(f"/api/v1/explanation-reports/{report.pk}/cancel")
    assert resp.status_code == status, resp.content[:200]
    if status == 200:
        assert resp.json()["status"] == "cancelled"
        again = client_for(user).post(f"/api/v1/explanation-reports/{report.pk}/cancel")
        assert again.status_code == 409 and again.json()["error"]["code"] == "report_ended"
    else:
        assert ExplanationReport.objects.get(pk=report.pk).status == ReportStatus.QUEUED
