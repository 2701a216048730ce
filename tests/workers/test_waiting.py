"""Why a queued batch item waits (workers.selectors.waiting), read off the live workers' heartbeats and
what is running; other projects' items are counted, never named."""

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from annotations.models import Role
from tests.factories import MembershipFactory, UserFactory
from tests.workers.test_training_helpers import make_version
from workers.models import ExplanationReport, ExportJob, RunStatus, TrainingRun, WorkerHeartbeat
from workers.selectors.waiting import waiting_for

pytestmark = pytest.mark.django_db


def _worker(name: str, queues: list[str], seen_s_ago: float = 0) -> None:
    now = timezone.now()
    WorkerHeartbeat.objects.create(
        hostname=name, queues=queues, pid=1, started_at=now, last_seen=now - timedelta(seconds=seen_s_ago)
    )


def _run(project, status=RunStatus.QUEUED, **kw) -> TrainingRun:
    return TrainingRun.objects.create(project=project, config={"train": {}}, seed=1, status=status, **kw)


def test_no_worker_for_the_queue_says_so(project):
    queued = _run(project)
    assert "no worker takes the 'train' queue" in waiting_for("training run", queued)
    _worker("interactive@h", ["interactive", "default"])
    _worker("batch@h", ["train", "score"], seen_s_ago=3600)  # dead: its heartbeat is an hour old
    assert "no worker takes the 'train' queue" in waiting_for("training run", queued)


def test_behind_what_the_same_workers_run_named_in_this_project_only(project, other_project):
    _worker("batch@h", ["ingest", "score", "explain", "train", "export"])
    queued = _run(project)
    assert waiting_for("training run", queued) == "waiting for a worker to pick it up"
    version = make_version(project, number=1)
    started = timezone.now() - timedelta(seconds=60)
    report = ExplanationReport.objects.create(
        project=project, model_version=version, status="running", progress=25.0, started_at=started
    )
    other = _run(other_project, status=RunStatus.RUNNING, progress=50.0, epochs=[{"eta_seconds": 90.0}])
    why = waiting_for("training run", queued)
    assert why.startswith("behind ") and f"explanation report #{report.pk} (25 %, about 3 min left)" in why
    assert "a training run of another project (50 %, about 2 min left)" in why
    assert f"#{other.pk}" not in why and other_project.name not in why  # counted, not named
    export = ExportJob.objects.create(project=project, status="queued")
    assert "explanation report" in waiting_for("export", export)


def test_a_worker_for_training_only_is_not_held_up_by_reports(project):
    _worker("gpu@h", ["score", "train"])
    _worker("cpu@h", ["ingest", "explain", "export"])
    version = make_version(project, number=1)
    ExplanationReport.objects.create(project=project, model_version=version, status="running", progress=10.0)
    assert waiting_for("training run", _run(project)) == "waiting for a worker to pick it up"


def test_started_or_finished_items_have_no_reason(project):
    _worker("batch@h", ["train"])
    assert waiting_for("training run", _run(project, status=RunStatus.RUNNING)) is None
    assert waiting_for("training run", _run(project, status=RunStatus.SUCCEEDED)) is None


def test_the_training_run_api_says_why_a_run_waits(project):
    ml = UserFactory()
    MembershipFactory(project=project, user=ml, role=Role.ML_ENGINEER)
    client = APIClient()
    client.force_authenticate(ml)
    queued = _run(project)
    body = client.get(f"/api/v1/training-runs/{queued.pk}").json()
    assert "no worker takes the 'train' queue" in body["waiting_for"]
    listed = client.get(f"/api/v1/projects/{project.pk}/training-runs").json()["results"]
    assert listed[0]["waiting_for"] == body["waiting_for"]
