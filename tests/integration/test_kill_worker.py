"""kill -9 the worker during training: the reaper ends the run FAILED, nothing is half-registered, the
active version and the queue are untouched and the queue still serves."""

import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from annotations.models import Case, Role
from annotations.services.queue import case_claim_next
from tests.factories import MembershipFactory, TrainingSettingsFactory, UserFactory
from tests.integration.conftest import ROOT, subprocess_env, wait_until
from tests.workers.test_training_helpers import TINY, make_version, seed_project
from workers.models import ModelVersion, RunStatus, TrainingRun, VersionState, WorkerHeartbeat
from workers.services import training as training_service
from workers.services.scoring import scoring_run
from workers.services.training import training_run_start, training_runs_reap
from workers.tasks import training_run_execute

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def own_worker(services):
    """A worker of our own on a private queue (the session's worker must not take this run)."""
    env = subprocess_env(HITL_WORKER_HEARTBEAT_SECONDS="1")
    queue = f"kill-{uuid.uuid4().hex[:8]}"
    hostname = f"{queue}@itest"
    cmd = [sys.executable, "-m", "celery", "-A", "hitl", "worker", "-Q", queue, "-c", "1", "-n", hostname]
    proc = subprocess.Popen([*cmd, "-l", "WARNING"], cwd=ROOT, env=env, start_new_session=True)
    try:
        wait_until(
            lambda: proc.poll() is not None or WorkerHeartbeat.objects.filter(hostname=hostname).exists(), 90
        )
        assert proc.poll() is None, "the worker exited"
        yield proc, queue
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def test_kill_9_during_training(own_worker, monkeypatch):
    proc, queue = own_worker
    project = TrainingSettingsFactory(query_strategy="entropy").project
    ml, reader = UserFactory(), UserFactory()
    MembershipFactory(project=project, user=ml, role=Role.ML_ENGINEER)
    MembershipFactory(project=project, user=reader, role=Role.ANNOTATOR)
    seed_project(project, ml, n_pool=4)
    active = make_version(project, number=1, state=VersionState.ACTIVE)
    scoring_run(project_id=project.pk, version_id=active.pk)
    before = dict(Case.objects.filter(project=project).values_list("pk", "priority"))

    monkeypatch.setattr(training_service, "_enqueue_execute", lambda run_id: None)  # we route it ourselves
    long = {**TINY, "epochs": 500, "max_steps_per_epoch": 4}
    run = training_run_start(project=project, requested_by=ml, config_overrides=long)
    training_run_execute.apply_async(kwargs={"run_id": run.pk}, queue=queue)
    wait_until(lambda: len(TrainingRun.objects.get(pk=run.pk).epochs) >= 2, timeout=60)

    os.killpg(proc.pid, signal.SIGKILL)  # the whole process group: no graceful shutdown at all
    proc.wait(timeout=30)
    run.refresh_from_db()
    assert run.status == RunStatus.RUNNING  # nobody finished it
    time.sleep(1.5)
    assert training_runs_reap(stale_after_s=1) == [run.pk]
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED and run.outcome.startswith("worker lost") and run.finished_at
    assert run.result_version is None
    assert list(ModelVersion.objects.filter(project=project).values_list("pk", "state")) == [
        (active.pk, VersionState.ACTIVE)
    ]
    assert dict(Case.objects.filter(project=project).values_list("pk", "priority")) == before
    assignment = case_claim_next(project=project, reader=reader)  # the queue still serves, in order
    head = max((p, -pk) for pk, p in before.items() if Case.objects.get(pk=pk).split == "pool")
    assert assignment is not None and assignment.case_id == -head[1]
    # A new run may start: the dead one no longer blocks the project.
    assert training_run_start(project=project, requested_by=ml, config_overrides=TINY).status == "queued"
