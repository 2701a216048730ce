"""Training runs: start (validated config, one open run per project), execute (idempotent, progress and
heartbeat in the run row, cancellable), automatic triggering, and reaping runs whose worker died.

Run lifecycle: QUEUED -> RUNNING -> SUCCEEDED | FAILED | CANCELLED. Only `training_run_execute` moves a run
to RUNNING (claiming it, attempt += 1); every later write of that execution is conditioned on
(status RUNNING, attempts == its attempt), so a reaped or re-claimed run is never overwritten by a zombie.
Reaper policy: a RUNNING run without a heartbeat for STALE_AFTER_S is marked FAILED ("worker lost"); it is
not re-queued (a new run is one click or the next auto-trigger away, and a run that killed its worker,
e.g. out of memory, would likely kill the next one too).
"""

import hashlib
import logging
import math
import secrets
import time
from datetime import timedelta
from typing import Any

import numpy as np
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from annotations.models import Annotation, AnnotationKind, Project
from hitl.core import task_names
from hitl.core.audit import audit_record
from hitl.core.errors import ConflictError
from hitl.core.outbox import outbox_enqueue
from hitl.core.storage import bytes_save
from workers.ml.checkpoint import checkpoint_to_bytes
from workers.ml.device import limit_cpu_threads
from workers.ml.inference import predict_labels
from workers.ml.networks import NetworkConfig
from workers.ml.training import EpochReport, TrainConfig, dice_per_class, mean_foreground_dice, train
from workers.models import OPEN_RUN, RunStatus, TrainingRun
from workers.services.datasets import (
    LabelledSet,
    TrainingSets,
    training_sets_build,
)
from workers.services.registry import active_version, model_state_load, model_version_register
from workers.services.training_config import training_config_build, training_config_validate

log = logging.getLogger(__name__)

STALE_AFTER_S = 300.0  # a RUNNING run without a heartbeat this long is considered lost
MAX_ATTEMPTS = 2  # a redelivered execute may re-claim a stale run once
HEARTBEAT_EVERY_S = 2.0  # between epochs, should_stop refreshes heartbeat_at at most this often


@transaction.atomic
def training_run_start(
    *,
    project: Project,
    requested_by=None,
    trigger: str = "manual",
    config_overrides: dict[str, Any] | None = None,
) -> TrainingRun:
    """Create a QUEUED run and enqueue its execution after commit. Raises ConflictError("run_open") when
    the project already has a queued or running run (also enforced by a partial unique constraint), and
    ValidationError for bad overrides. Warm-starts from the active version when its network matches."""
    overrides = training_config_validate({**project.training_config, **(config_overrides or {})})
    if TrainingRun.objects.filter(project=project, status__in=OPEN_RUN).exists():
        raise ConflictError("run_open", "this project already has a queued or running training run")
    seed = overrides.get("seed", secrets.randbelow(2**31))
    config = training_config_build(project=project, overrides=overrides, seed=seed)
    active = active_version(project=project)
    base = (
        active
        if active and config["warm_start"] and active.config.get("network") == config["network"]
        else None
    )
    try:
        with transaction.atomic():
            run = TrainingRun.objects.create(
                project=project,
                trigger=trigger,
                requested_by=requested_by if getattr(requested_by, "is_authenticated", False) else None,
                base_version=base,
                config=config,
                seed=seed,
                label_policy=project.label_policy,
            )
    except IntegrityError as exc:  # a concurrent start won the race
        raise ConflictError("run_open", "this project already has a queued or running training run") from exc
    audit_record(
        actor=requested_by,
        action="training_run.start",
        project=project,
        target=run,
        details={"trigger": trigger, "overrides": overrides, "base_version": base.pk if base else None},
    )
    _enqueue_execute(run.pk)
    return run


def _enqueue_execute(run_id: int) -> None:
    """Inside the caller's transaction, through the outbox: if the broker is down now, the sweep sends it
    later and the run is not left queued forever."""
    outbox_enqueue(task=task_names.TRAINING_RUN_EXECUTE, kwargs={"run_id": run_id})


@transaction.atomic
def training_run_cancel(*, run: TrainingRun, actor) -> TrainingRun:
    """QUEUED: cancelled at once. RUNNING: flagged; the worker stops before its next step and finishes the
    run as CANCELLED without registering a version. Finished runs: ConflictError("run_finished")."""
    run = TrainingRun.objects.select_for_update().get(pk=run.pk)
    if run.status == RunStatus.QUEUED:
        run.status, run.finished_at = RunStatus.CANCELLED, timezone.now()
        run.outcome = "cancelled before it started"
    elif run.status == RunStatus.RUNNING:
        run.outcome = "cancellation requested"
    else:
        raise ConflictError("run_finished", f"the run has already ended ({run.status})")
    run.cancel_requested = True
    run.save(update_fields=["status", "finished_at", "outcome", "cancel_requested"])
    audit_record(actor=actor, action="training_run.cancel", project=run.project, target=run)
    return run


def _is_stale(run: TrainingRun, now, stale_after_s: float) -> bool:
    last = run.heartbeat_at or run.started_at
    return last is None or (now - last).total_seconds() > stale_after_s


def _claim(run_id: int) -> TrainingRun | None:
    """QUEUED -> RUNNING (or re-claim a stale RUNNING run once); None when there is nothing to do."""
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().filter(pk=run_id).first()
        if run is None:
            return None
        now = timezone.now()
        if run.status == RunStatus.RUNNING and _is_stale(run, now, STALE_AFTER_S):
            if run.attempts >= MAX_ATTEMPTS:
                _mark(run, RunStatus.FAILED, "worker lost: no heartbeat, and no attempts left")
                return None
        elif run.status != RunStatus.QUEUED:
            return None
        run.status, run.started_at, run.heartbeat_at = RunStatus.RUNNING, now, now
        run.attempts += 1
        run.progress, run.epochs = 0.0, []
        run.save(update_fields=["status", "started_at", "heartbeat_at", "attempts", "progress", "epochs"])
        return run


def _mark(run: TrainingRun, status: str, outcome: str) -> None:
    run.status, run.outcome, run.finished_at = status, outcome[:2000], timezone.now()
    run.save(update_fields=["status", "outcome", "finished_at"])


def _finish(run_id: int, attempt: int, status: str, outcome: str) -> bool:
    """End this attempt's run; False when the run is no longer ours (reaped or re-claimed)."""
    return bool(
        TrainingRun.objects.filter(pk=run_id, status=RunStatus.RUNNING, attempts=attempt).update(
            status=status, outcome=outcome[:2000], finished_at=timezone.now()
        )
    )


def _json_float(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


class _RunMonitor:
    """Progress callback and should_stop for ml.training.train, writing to the run row in short updates."""

    def __init__(self, run_id: int, attempt: int) -> None:
        self.run_id, self.attempt = run_id, attempt
        self.epochs: list[dict] = []
        self.lost = False  # the run stopped being ours (reaped, re-claimed)
        self._last_check = -math.inf

    def _mine(self):
        return TrainingRun.objects.filter(pk=self.run_id, status=RunStatus.RUNNING, attempts=self.attempt)

    def progress(self, report: EpochReport) -> None:
        self.epochs.append(
            {
                "epoch": report.epoch,
                "train_loss": _json_float(report.train_loss),
                "val_dice": _json_float(report.val_dice),
                "seconds": round(report.seconds, 3),
                "eta_seconds": round(report.eta_seconds, 1),
            }
        )
        pct = min(99.0, 100.0 * report.epoch / max(1, report.epochs))
        if not self._mine().update(progress=pct, epochs=self.epochs, heartbeat_at=timezone.now()):
            self.lost = True

    def should_stop(self) -> bool:
        if self.lost:
            return True
        now = time.monotonic()
        if now - self._last_check < HEARTBEAT_EVERY_S:
            return False
        self._last_check = now
        row = (
            TrainingRun.objects.filter(pk=self.run_id)
            .values("status", "attempts", "cancel_requested")
            .first()
        )
        if row is None or row["status"] != RunStatus.RUNNING or row["attempts"] != self.attempt:
            self.lost = True
            return True
        if row["cancel_requested"]:
            return True
        self._mine().update(heartbeat_at=timezone.now())
        return False


def training_run_execute(*, run_id: int) -> TrainingRun | None:
    """Run a QUEUED run to its end. Idempotent: returns at once unless the run is QUEUED (or RUNNING with a
    stale heartbeat, once). Any exception ends the run FAILED with the reason; nothing is re-raised, so a
    broken run never loops through redeliveries."""
    run = _claim(run_id)
    if run is None:
        return TrainingRun.objects.filter(pk=run_id).first()
    try:
        _execute_claimed(run)
    except Exception as exc:
        log.exception("training run %s failed", run_id)
        _finish(run_id, run.attempts, RunStatus.FAILED, f"failed: {type(exc).__name__}: {str(exc)[:500]}")
    return TrainingRun.objects.filter(pk=run_id).first()


def _execute_claimed(run: TrainingRun) -> None:
    limit_cpu_threads()
    attempt = run.attempts
    sets = training_sets_build(project=run.project, label_policy=run.label_policy)
    revision_ids = sets.train.revision_ids + sets.validation.revision_ids + sets.test.revision_ids
    TrainingRun.objects.filter(pk=run.pk).update(revision_ids=revision_ids)
    if not len(sets.train):
        _finish(
            run.pk,
            attempt,
            RunStatus.FAILED,
            "no training labels: no pool/train case has a current annotation",
        )
        return
    if not len(sets.validation):
        _finish(
            run.pk, attempt, RunStatus.FAILED, "no validation labels: no validation case has an annotation"
        )
        return
    net_cfg = NetworkConfig.from_dict(run.config["network"])
    train_cfg = TrainConfig.from_dict(run.config["train"])
    init_state = model_state_load(run.base_version) if run.base_version is not None else None
    monitor = _RunMonitor(run.pk, attempt)
    result = train(
        net_cfg,
        train_cfg,
        sets.train.images,
        sets.train.masks,
        sets.validation.images,
        sets.validation.masks,
        init_state=init_state,
        progress=monitor.progress,
        should_stop=monitor.should_stop,
    )
    if monitor.lost:
        return  # the reaper (or a re-claim) owns the run now
    if result.cancelled:
        done = len(result.history)
        _finish(
            run.pk, attempt, RunStatus.CANCELLED, f"cancelled on request after {done} epoch(s); no version"
        )
        return
    metrics = evaluate(result.model, sets, net_cfg.num_classes, train_cfg.batch_size)
    metrics |= {"best_epoch": result.best_epoch, "epochs_run": len(result.history), "seed": run.seed}
    data = checkpoint_to_bytes(result.model, net_cfg, meta={"run": run.pk, "project": run.project_id})
    # Weights first: the version row only ever points at a file that exists.
    path = bytes_save(f"projects/{run.project_id}/models/run-{run.pk}-a{attempt}.ckpt", data)
    model_version_register(
        run_id=run.pk,
        attempt=attempt,
        weights_path=path,
        weights_sha256=hashlib.sha256(data).hexdigest(),
        metrics=metrics,
    )


def _dice(model, labelled: LabelledSet, k: int, batch_size: int) -> tuple[float | None, list[float]]:
    if not len(labelled):
        return None, []
    preds = predict_labels(model, labelled.images, batch_size=batch_size)
    per_class = np.mean([dice_per_class(p, t, k) for p, t in zip(preds, labelled.masks, strict=True)], axis=0)
    return mean_foreground_dice(preds, labelled.masks, k), [float(x) for x in per_class]


def evaluate(model, sets: TrainingSets, num_classes: int, batch_size: int) -> dict[str, Any]:
    """Validation and test Dice (mean foreground, and per class) plus the set sizes."""
    val, val_per_class = _dice(model, sets.validation, num_classes, batch_size)
    test, test_per_class = _dice(model, sets.test, num_classes, batch_size)
    return {
        "validation_dice": _json_float(val) if val is not None else None,
        "test_dice": _json_float(test) if test is not None else None,
        "per_class": {"validation": val_per_class, "test": test_per_class},
        "labelled_cases": len(sets.train),
        "validation_cases": len(sets.validation),
        "test_cases": len(sets.test),
    }


def training_autotrigger(*, project: Project) -> TrainingRun | None:
    """Start an "auto" run when auto_retrain_every > 0, no run is open, and at least that many reader
    annotations were created since the newest revision the last finished run (succeeded or failed: a run
    that failed, e.g. for lack of validation labels, is not retried after every single submission) used."""
    if project.auto_retrain_every <= 0:
        return None
    if TrainingRun.objects.filter(project=project, status__in=OPEN_RUN).exists():
        return None
    last = (
        TrainingRun.objects.filter(project=project, status__in=[RunStatus.SUCCEEDED, RunStatus.FAILED])
        .exclude(revision_ids=[])
        .order_by("-created_at", "-id")
        .first()
    )
    since = max(last.revision_ids) if last is not None else 0
    new = Annotation.objects.filter(case__project=project, kind=AnnotationKind.READER, pk__gt=since).count()
    if new < project.auto_retrain_every:
        return None
    try:
        return training_run_start(project=project, requested_by=None, trigger="auto")
    except ConflictError:
        return None


def training_runs_reap(*, stale_after_s: float = STALE_AFTER_S) -> list[int]:
    """Mark RUNNING runs whose heartbeat is older than `stale_after_s` FAILED ("worker lost"). Returns their
    ids. Nothing was registered for them: registration is the run's last, atomic step."""
    horizon = timezone.now() - timedelta(seconds=stale_after_s)
    ids = list(
        TrainingRun.objects.filter(status=RunStatus.RUNNING)
        .filter(Q(heartbeat_at__lt=horizon) | Q(heartbeat_at__isnull=True, started_at__lt=horizon))
        .values_list("pk", flat=True)
    )
    reaped = []
    for pk in ids:
        with transaction.atomic():
            run = TrainingRun.objects.select_for_update().get(pk=pk)
            if run.status != RunStatus.RUNNING or not _is_stale(run, timezone.now(), stale_after_s):
                continue
            _mark(
                run,
                RunStatus.FAILED,
                f"worker lost: no heartbeat for over {int(stale_after_s)} s "
                f"(after {len(run.epochs)} epoch(s)); no version was registered",
            )
            reaped.append(pk)
    if reaped:
        log.warning("reaped training runs %s (worker lost)", reaped)
    return reaped
