import hashlib

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from annotations.models import Role
from hitl.core.errors import ConflictError
from hitl.core.models import AuditEvent
from hitl.core.storage import bytes_load
from tests.factories import TrainingSettingsFactory
from tests.workers.test_training_helpers import TINY, annotate, pool_masks, seed_project
from workers.ml import backends
from workers.models import (
    CaseScore,
    Explanation,
    ModelVersion,
    Prediction,
    RunStatus,
    TrainingRun,
    VersionState,
)
from workers.services import training as training_service
from workers.services import training_run as run_service
from workers.services.registry import model_version_register
from workers.services.training import (
    training_autotrigger,
    training_run_cancel,
    training_run_start,
    training_runs_reap,
)
from workers.services.training_config import training_config_validate
from workers.services.training_run import training_run_execute


@pytest.fixture
def ml(member):
    return member(Role.ML_ENGINEER)


@pytest.fixture
def seeded(project, ml):
    return seed_project(project, ml)


@pytest.fixture
def no_enqueue(monkeypatch):
    """Record enqueues instead of running them, so a test drives each step itself."""
    sent = {"execute": [], "scoring": []}
    monkeypatch.setattr(training_service, "_enqueue_execute", lambda run_id: sent["execute"].append(run_id))
    monkeypatch.setattr(
        "workers.services.registry._enqueue_scoring", lambda p, v: sent["scoring"].append((p, v))
    )
    return sent


def _run(project, ml, **overrides):
    run = training_run_start(project=project, requested_by=ml, config_overrides={**TINY, **overrides})
    return training_run_execute(run_id=run.pk)


def test_start_execute_registers_first_version_and_the_whole_chain_follows(
    project, ml, seeded, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        run = training_run_start(project=project, requested_by=ml, config_overrides=TINY)
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED, run.outcome
    assert run.progress == 100 and len(run.epochs) == 2 and run.heartbeat_at and run.attempts == 1
    assert {"epoch", "train_loss", "val_dice", "seconds", "eta_seconds"} <= set(run.epochs[0])
    labelled = [c.current_annotation_id for k in ("train", "validation", "test") for c in seeded[k]]
    assert sorted(run.revision_ids) == sorted(labelled)
    version = run.result_version
    assert version.number == 1 and version.state == VersionState.ACTIVE and version.promoted_at
    assert "first active version" in run.outcome
    m = version.metrics
    assert 0 <= m["validation_dice"] <= 1 and 0 <= m["test_dice"] <= 1
    assert 0 <= m["validation_calibration"]["ece"] <= 1 and m["validation_calibration"]["pixels"] > 0
    mc = m["validation_calibration_mc"]
    assert (
        0 <= mc["ece"] <= 1
        and mc["pixels"] == m["validation_calibration"]["pixels"]
        and mc["mc_samples"] == run.config["scoring"]["mc_samples"]
    )
    assert m["labelled_cases"] == 4 and m["validation_cases"] == 2 and m["test_cases"] == 2
    assert hashlib.sha256(bytes_load(version.weights_path)).hexdigest() == version.weights_sha256
    assert version.config["network"]["channels"] == [4, 8, 16] and run.seed == 0
    # after commit: scoring, queue order, proposals and explanations for every pool case; proposals for the
    # test cases too (their reported Dice can be checked against what the model draws)
    pool_ids = {c.pk for c in seeded["pool"]}
    test_ids = {c.pk for c in seeded["test"]}
    assert set(CaseScore.objects.filter(model_version=version).values_list("case_id", flat=True)) == pool_ids
    proposed = set(Prediction.objects.filter(model_version=version).values_list("case_id", flat=True))
    assert proposed == pool_ids | test_ids
    assert Explanation.objects.filter(model_version=version).count() == 2 * len(pool_ids)
    assert AuditEvent.objects.filter(action="training_run.start", target_id=str(run.pk)).exists()


def test_worse_second_version_stays_candidate_with_both_numbers(project, ml, seeded, no_enqueue, monkeypatch):
    first = _run(project, ml)
    v1 = first.result_version
    assert v1.state == VersionState.ACTIVE
    real = run_service.evaluate

    def worse(*args, **kwargs):
        return {**real(*args, **kwargs), "validation_dice": v1.metrics["validation_dice"] - 0.2}

    monkeypatch.setattr(run_service, "evaluate", worse)
    second = _run(project, ml)
    assert second.base_version_id == v1.pk  # warm start: same network
    v2 = second.result_version
    assert v2.state == VersionState.CANDIDATE and v2.parent_id == v1.pk
    assert "kept as candidate" in second.outcome
    assert f"{v2.metrics['validation_dice']:.4f}" in second.outcome
    assert f"{v1.metrics['validation_dice']:.4f}" in second.outcome
    v1.refresh_from_db()
    assert v1.state == VersionState.ACTIVE


def test_one_open_run_per_project(project, ml, seeded, no_enqueue):
    training_run_start(project=project, requested_by=ml, config_overrides=TINY)
    with pytest.raises(ConflictError) as err:
        training_run_start(project=project, requested_by=ml)
    assert err.value.code == "run_open"
    with pytest.raises(IntegrityError), transaction.atomic():  # the DB says so too
        TrainingRun.objects.create(project=project, status=RunStatus.RUNNING)


def test_execute_is_idempotent(project, ml, seeded, no_enqueue):
    run = _run(project, ml)
    again = training_run_execute(run_id=run.pk)
    assert again.status == RunStatus.SUCCEEDED and again.attempts == 1
    assert ModelVersion.objects.filter(project=project).count() == 1


def test_cancel_queued_and_running(project, ml, seeded, no_enqueue):
    run = training_run_start(project=project, requested_by=ml, config_overrides=TINY)
    run = training_run_cancel(run=run, actor=ml)
    assert run.status == RunStatus.CANCELLED
    assert training_run_execute(run_id=run.pk).status == RunStatus.CANCELLED  # a late delivery: nothing
    with pytest.raises(ConflictError):
        training_run_cancel(run=run, actor=ml)
    # running: the flag stops training before its next step; nothing is registered
    run = training_run_start(project=project, requested_by=ml, config_overrides=TINY)
    TrainingRun.objects.filter(pk=run.pk).update(cancel_requested=True)
    run = training_run_execute(run_id=run.pk)
    assert run.status == RunStatus.CANCELLED and "cancelled on request" in run.outcome
    assert not ModelVersion.objects.exists()


def test_running_cancel_sets_the_flag(project, ml, seeded, no_enqueue):
    run = training_run_start(project=project, requested_by=ml, config_overrides=TINY)
    TrainingRun.objects.filter(pk=run.pk).update(status=RunStatus.RUNNING)
    run = training_run_cancel(run=run, actor=ml)
    assert run.status == RunStatus.RUNNING and run.cancel_requested


def test_without_a_validation_split_a_share_of_the_labelled_images_validates(project, ml, no_enqueue):
    seeded = seed_project(project, ml, n_train=5, n_val=0, n_test=0, n_pool=0)
    run = _run(project, ml)
    assert run.status == RunStatus.SUCCEEDED, run.outcome
    metrics = run.result_version.metrics
    assert metrics["validation_cases"] == 1 and metrics["labelled_cases"] == 4  # one of 5 images: 20 %
    assert metrics["validation_source"].startswith("carved") and "validation carved" in run.outcome
    labelled = sorted(c.current_annotation_id for c in seeded["train"])
    assert sorted(run.revision_ids) == labelled  # every revision read is recorded once


def test_too_few_labels_to_validate_fail_clearly(project, ml, no_enqueue):
    seed_project(project, ml, n_train=1, n_val=0, n_test=0, n_pool=0)
    run = _run(project, ml)
    assert run.status == RunStatus.FAILED and "no validation labels" in run.outcome
    run.delete()
    project2_run = _run(
        project.__class__.objects.create(name="empty", label_classes=project.label_classes), ml
    )
    assert project2_run.status == RunStatus.FAILED and "no training labels" in project2_run.outcome


def test_exception_fails_the_run_with_the_reason(project, ml, seeded, no_enqueue, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(backends, "train", boom)  # the built-in backend's trainer
    run = _run(project, ml)
    assert run.status == RunStatus.FAILED and run.outcome == "failed: RuntimeError: out of memory"
    assert run.finished_at and not ModelVersion.objects.exists()


def test_config_overrides_are_validated():
    assert training_config_validate({"epochs": 3}) == {"epochs": 3}
    for bad in ({"nope": 1}, {"epochs": 0}, {"lr": "fast"}, {"channels": [4]}, {"patch_size": 30}):
        with pytest.raises(ValidationError):
            training_config_validate(bad)


def test_network_architecture_is_a_project_setting_and_decides_the_explanations():
    assert training_config_validate({"arch": "attention_unet", "explain_methods": ["attention", "gradcam"]})
    for bad in (
        {"arch": "vit"},
        {"explain_methods": ["attention"]},
        {"arch": "unet", "explain_methods": ["attention"]},
    ):
        with pytest.raises(ValidationError):
            training_config_validate(bad)


def test_an_attention_unet_run_trains_a_fresh_attention_network(project, ml, seeded, no_enqueue):
    from workers.ml.models.checkpoint import checkpoint_from_bytes
    from workers.services.weights import weights_bytes

    first = _run(project, ml)
    assert first.result_version.state == "active"  # a warm start would have been possible for a unet
    run = _run(project, ml, arch="attention_unet", explain_methods=["attention"])
    version = run.result_version
    assert run.status == RunStatus.SUCCEEDED and version.config["network"]["arch"] == "attention_unet"
    assert (
        run.base_version is None and first.result_version.config["network"]["arch"] == "unet"
    )  # no warm start across architectures
    model, cfg, _ = checkpoint_from_bytes(weights_bytes(version))
    assert cfg.arch == "attention_unet" and type(model).__name__ == "AttentionUnet"


def test_the_reaper_requeues_a_lost_run_once_then_fails_it(project, ml, seeded, no_enqueue):
    from datetime import timedelta

    from django.utils import timezone

    run = training_run_start(project=project, requested_by=ml, config_overrides=TINY)
    old = timezone.now() - timedelta(seconds=600)
    TrainingRun.objects.filter(pk=run.pk).update(status=RunStatus.RUNNING, heartbeat_at=old, attempts=1)
    assert training_runs_reap(stale_after_s=1000) == []
    assert training_runs_reap() == [run.pk]
    run.refresh_from_db()
    assert run.status == RunStatus.QUEUED and "queued again (attempt 2 of 2)" in run.outcome
    assert no_enqueue["execute"].count(run.pk) == 2  # the start's and the re-queue's execute
    run = training_run_execute(run_id=run.pk)  # the restarted worker completes it, exactly once
    assert run.status == RunStatus.SUCCEEDED and run.attempts == 2 and run.result_version is not None
    assert ModelVersion.objects.filter(project=project).count() == 1
    assert training_run_execute(run_id=run.pk).result_version_id == run.result_version_id  # redelivery

    second = training_run_start(project=project, requested_by=ml, config_overrides=TINY)
    TrainingRun.objects.filter(pk=second.pk).update(status=RunStatus.RUNNING, heartbeat_at=old, attempts=2)
    assert training_runs_reap() == [second.pk]
    second.refresh_from_db()
    assert second.status == RunStatus.FAILED and second.outcome.startswith("worker lost")
    assert training_run_execute(run_id=second.pk).status == RunStatus.FAILED  # a redelivery: nothing
    third = training_run_start(project=project, requested_by=ml, config_overrides=TINY)
    TrainingRun.objects.filter(pk=third.pk).update(
        status=RunStatus.RUNNING, heartbeat_at=old, attempts=1, cancel_requested=True
    )
    assert training_runs_reap() == [third.pk]
    third.refresh_from_db()
    assert third.status == RunStatus.CANCELLED


def test_a_run_whose_process_died_fails_with_the_reason_and_only_that_attempt(project, ml, no_enqueue):
    run = training_run_start(project=project, requested_by=ml, config_overrides=TINY)
    TrainingRun.objects.filter(pk=run.pk).update(status=RunStatus.RUNNING, attempts=1)
    # Another attempt owns it (the child had claimed attempt 1, this message expected attempt 2): untouched.
    assert not training_service.training_run_process_died(run_id=run.pk, attempts_before=1, exit_status="x")
    assert training_service.training_run_process_died(
        run_id=run.pk, attempts_before=0, exit_status="signal SIGKILL"
    )
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED and run.finished_at is not None
    assert run.outcome == "the training process died (signal SIGKILL); no version was registered"
    assert not training_service.training_run_process_died(run_id=run.pk, attempts_before=0, exit_status="x")

    unclaimed = training_run_start(project=project, requested_by=ml, config_overrides=TINY)
    assert training_service.training_run_process_died(
        run_id=unclaimed.pk, attempts_before=0, exit_status="exit code 1"
    )
    assert TrainingRun.objects.get(pk=unclaimed.pk).status == RunStatus.FAILED
    assert not training_service.training_run_process_died(run_id=10**9, attempts_before=0, exit_status="x")
    assert not ModelVersion.objects.exists()


def test_redelivery_reclaims_a_stale_run_once(project, ml, seeded, no_enqueue):
    from datetime import timedelta

    from django.utils import timezone

    run = training_run_start(project=project, requested_by=ml, config_overrides=TINY)
    old = timezone.now() - timedelta(seconds=600)
    TrainingRun.objects.filter(pk=run.pk).update(status=RunStatus.RUNNING, heartbeat_at=old, attempts=1)
    run = training_run_execute(run_id=run.pk)
    assert run.status == RunStatus.SUCCEEDED and run.attempts == 2


def test_a_zombie_attempt_never_registers(project, ml, seeded, no_enqueue):
    run = training_run_start(project=project, requested_by=ml, config_overrides=TINY)
    TrainingRun.objects.filter(pk=run.pk).update(status=RunStatus.FAILED, attempts=1)
    got = model_version_register(
        run_id=run.pk, attempt=1, weights_path="x.ckpt", weights_sha256="0" * 64, metrics={}
    )
    assert got is None and not ModelVersion.objects.exists()


def test_autotrigger_after_n_reader_annotations(
    project, ml, seeded, no_enqueue, member, django_capture_on_commit_callbacks
):
    TrainingSettingsFactory(project=project, auto_retrain_every=2)
    reader = member(Role.ANNOTATOR)
    assert training_autotrigger(project=project) is None  # only reference labels so far
    _run(project, ml)
    masks = pool_masks(6, offset=8)
    annotate(seeded["pool"][0], mask=masks[0], user=reader)
    assert training_autotrigger(project=project) is None
    annotate(seeded["pool"][1], mask=masks[1], user=reader)
    with django_capture_on_commit_callbacks(execute=True):
        run = training_autotrigger(project=project)
    assert run is not None and run.trigger == "auto" and run.requested_by is None
    assert training_autotrigger(project=project) is None  # one open run
    assert no_enqueue["execute"][-1] == run.pk


def test_the_run_records_the_fingerprint_and_its_plan_and_overrides_win(project, ml, seeded, no_enqueue):
    run = training_run_start(project=project, requested_by=ml, config_overrides={"patch_size": 32})
    fp, planned = run.config["fingerprint"], run.config["plan"]
    assert fp["images"] == sum(len(v) for v in seeded.values())
    assert planned["patch_size"] == 64 and len(planned["channels"]) == 4  # small phantoms: the minimum patch
    assert run.config["train"]["patch_size"] == [32, 32]  # the override wins
    assert run.config["train"]["batch_size"] == planned["batch_size"]  # the plan fills what is not overridden


def test_a_warm_started_run_fine_tunes_for_fewer_epochs_unless_epochs_are_set(
    project, ml, seeded, no_enqueue
):
    v1 = _run(project, ml).result_version
    assert v1.state == VersionState.ACTIVE
    plain = {k: v for k, v in TINY.items() if k != "epochs"}
    run = training_run_start(project=project, requested_by=ml, config_overrides=plain)
    assert run.base_version_id == v1.pk
    assert run.config["train"]["epochs"] == run.config["warm_start_epochs"] == 12
    training_run_cancel(run=run, actor=ml)
    run = training_run_start(
        project=project, requested_by=ml, config_overrides={**plain, "warm_start_epochs": 3}
    )
    assert run.config["train"]["epochs"] == 3
    training_run_cancel(run=run, actor=ml)
    run = training_run_start(project=project, requested_by=ml, config_overrides={**plain, "epochs": 20})
    assert run.base_version_id == v1.pk and run.config["train"]["epochs"] == 20  # an explicit choice wins
    training_run_cancel(run=run, actor=ml)
    run = training_run_start(
        project=project, requested_by=ml, config_overrides={**plain, "warm_start": False}
    )
    assert run.base_version is None and run.config["train"]["epochs"] == 40  # a fresh run: the full recipe
