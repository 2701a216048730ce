"""kill -9 the worker during training: nothing is half-registered, the active version and the queue are
untouched and the queue still serves; the reaper queues the run again and a restarted worker completes it
exactly once (one version registered)."""

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


def _start_worker(queue: str, **env_extra: str) -> subprocess.Popen:
    """A worker of our own on a private queue (the session's worker must not take this run)."""
    env = subprocess_env(HITL_WORKER_HEARTBEAT_SECONDS="1", **env_extra)
    hostname = f"{queue}-{uuid.uuid4().hex[:4]}@itest"
    cmd = [sys.executable, "-m", "celery", "-A", "hitl", "worker", "-Q", queue, "-c", "1", "-n", hostname]
    proc = subprocess.Popen([*cmd, "-l", "WARNING"], cwd=ROOT, env=env, start_new_session=True)
    wait_until(
        lambda: proc.poll() is not None or WorkerHeartbeat.objects.filter(hostname=hostname).exists(), 90
    )
    assert proc.poll() is None, "the worker exited"
    return proc


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)  # the whole process group: no graceful shutdown at all
        proc.wait(timeout=30)


@pytest.fixture
def own_workers(services):
    """start(queue) -> a worker process; every one is killed at the end."""
    procs: list[subprocess.Popen] = []

    def start(queue: str, **env_extra: str) -> subprocess.Popen:
        procs.append(_start_worker(queue, **env_extra))
        return procs[-1]

    yield start
    for proc in procs:
        _kill(proc)


def test_kill_9_during_training_then_a_restarted_worker_completes_it_once(own_workers, monkeypatch):
    queue = f"kill-{uuid.uuid4().hex[:8]}"
    proc = own_workers(queue)
    project = TrainingSettingsFactory(query_strategy="entropy").project
    ml, reader = UserFactory(), UserFactory()
    MembershipFactory(project=project, user=ml, role=Role.ML_ENGINEER)
    MembershipFactory(project=project, user=reader, role=Role.ANNOTATOR)
    seed_project(project, ml, n_pool=4)
    active = make_version(project, number=1, state=VersionState.ACTIVE)
    scoring_run(project_id=project.pk, version_id=active.pk)
    before = dict(Case.objects.filter(project=project).values_list("pk", "priority"))

    sent: list[int] = []
    monkeypatch.setattr(training_service, "_enqueue_execute", sent.append)  # we route it ourselves
    config = {**TINY, "epochs": 30, "max_steps_per_epoch": 4, "warm_start": False}
    run = training_run_start(project=project, requested_by=ml, config_overrides=config)
    training_run_execute.apply_async(kwargs={"run_id": run.pk}, queue=queue)
    wait_until(lambda: len(TrainingRun.objects.get(pk=run.pk).epochs) >= 2, timeout=60)

    _kill(proc)
    run.refresh_from_db()
    assert run.status == RunStatus.RUNNING  # nobody finished it
    assert list(ModelVersion.objects.filter(project=project).values_list("pk", "state")) == [
        (active.pk, VersionState.ACTIVE)
    ]
    assert dict(Case.objects.filter(project=project).values_list("pk", "priority")) == before
    assignment = case_claim_next(project=project, reader=reader)  # the queue still serves, in order
    head = max((p, -pk) for pk, p in before.items() if Case.objects.get(pk=pk).split == "pool")
    assert assignment is not None and assignment.case_id == -head[1]

    time.sleep(1.5)
    assert training_runs_reap(stale_after_s=1) == [run.pk]  # lost: queued again, its execute re-sent
    run.refresh_from_db()
    assert run.status == RunStatus.QUEUED and sent == [run.pk, run.pk]
    own_workers(queue)  # the restart
    training_run_execute.apply_async(kwargs={"run_id": run.pk}, queue=queue)
    training_run_execute.apply_async(kwargs={"run_id": run.pk}, queue=queue)  # a duplicate delivery
    wait_until(lambda: TrainingRun.objects.get(pk=run.pk).status not in ("queued", "running"), timeout=240)
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED and run.attempts == 2, run.outcome
    versions = ModelVersion.objects.filter(project=project).exclude(pk=active.pk)
    assert list(versions.values_list("pk", flat=True)) == [run.result_version_id]  # exactly one


def _children(pid: int) -> list[int]:
    try:
        text = open(f"/proc/{pid}/task/{pid}/children").read()  # noqa: PTH123
    except FileNotFoundError:
        return []
    return [int(c) for c in text.split()]


def _grandchildren(pid: int) -> list[int]:
    return [g for c in _children(pid) for g in _children(c)]


def test_a_training_run_executes_in_its_own_process_and_its_death_is_reported(own_workers, monkeypatch):
    """The worker forks a child per run (workers.isolation: its memory goes back to the OS when the run
    ends). SIGKILL of that child alone (what the kernel's OOM killer does) ends the run FAILED with the
    reason at once; the worker lives on and the next run succeeds."""
    queue = f"oom-{uuid.uuid4().hex[:8]}"
    proc = own_workers(queue, HITL_BATCH_IN_CHILD="true")
    project = TrainingSettingsFactory().project
    ml = UserFactory()
    MembershipFactory(project=project, user=ml, role=Role.ML_ENGINEER)
    seed_project(project, ml, n_pool=4)
    monkeypatch.setattr(training_service, "_enqueue_execute", lambda run_id: None)  # we route it ourselves
    config = {**TINY, "epochs": 30, "max_steps_per_epoch": 4, "warm_start": False}
    run = training_run_start(project=project, requested_by=ml, config_overrides=config)
    training_run_execute.apply_async(kwargs={"run_id": run.pk}, queue=queue)
    wait_until(lambda: len(TrainingRun.objects.get(pk=run.pk).epochs) >= 1, timeout=60)

    trainers = _grandchildren(proc.pid)  # worker -> pool child -> the run's own process
    assert len(trainers) == 1, trainers
    os.kill(trainers[0], signal.SIGKILL)
    wait_until(lambda: TrainingRun.objects.get(pk=run.pk).status != RunStatus.RUNNING, timeout=60)
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED and run.attempts == 1
    assert run.outcome == "the training process died (signal SIGKILL); no version was registered"
    assert proc.poll() is None and not ModelVersion.objects.filter(project=project).exists()

    again = training_run_start(project=project, requested_by=ml, config_overrides=TINY)
    training_run_execute.apply_async(kwargs={"run_id": again.pk}, queue=queue)
    wait_until(lambda: TrainingRun.objects.get(pk=again.pk).status not in ("queued", "running"), timeout=240)
    again.refresh_from_db()
    assert again.status == RunStatus.SUCCEEDED, again.outcome
    # The run's process is gone with it: it exits after the row says SUCCEEDED (the outbox's sends after the
    # commit, closing its connections), so the check waits for the exit, not for the row alone.
    wait_until(lambda: _grandchildren(proc.pid) == [], timeout=60)
