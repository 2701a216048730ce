"""Execute a training run (the worker side: imports torch). Starting, cancelling, auto-triggering and reaping
runs is workers.services.training, which the web process uses; the run lifecycle is described there."""

import hashlib
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from annotations.models import Project
from hitl.core.storage import bytes_save
from workers.isolation import describe_exit, run_in_child
from workers.ml.al.scoring import sample_count
from workers.ml.backends import FitJob, ModelBackend, backend_for
from workers.ml.models.bundle_check import BundleRejected
from workers.ml.models.checkpoint import checkpoint_to_bytes
from workers.ml.models.device import limit_cpu_threads
from workers.ml.models.metrics import METRIC_NAME, Calibration, SetMetrics, calibration, set_metrics
from workers.ml.models.networks import NetworkConfig
from workers.ml.models.training import EpochReport, TrainConfig
from workers.models import RunStatus, TrainingRun
from workers.services.datasets import LabelledSet, TrainingSets, labelled_images, training_sets_build
from workers.services.registry import active_version, model_version_register
from workers.services.training import MAX_ATTEMPTS, STALE_AFTER_S, is_stale, mark, training_run_process_died
from workers.services.training_config import context_of
from workers.services.weights import bundle_model_build, model_load

log = logging.getLogger(__name__)

HEARTBEAT_EVERY_S = 2.0  # between epochs, should_stop refreshes heartbeat_at at most this often


def _claim(run_id: int) -> TrainingRun | None:
    """QUEUED -> RUNNING (or re-claim a stale RUNNING run once); None when there is nothing to do."""
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().filter(pk=run_id).first()
        if run is None:
            return None
        now = timezone.now()
        if run.status == RunStatus.RUNNING and is_stale(run, now, STALE_AFTER_S):
            if run.attempts >= MAX_ATTEMPTS:
                mark(run, RunStatus.FAILED, "worker lost: no heartbeat, and no attempts left")
                return None
        elif run.status != RunStatus.QUEUED:
            return None
        run.status, run.started_at, run.heartbeat_at = RunStatus.RUNNING, now, now
        run.attempts += 1
        run.progress, run.epochs = 0.0, []
        run.save(update_fields=["status", "started_at", "heartbeat_at", "attempts", "progress", "epochs"])
        return run


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


def training_run_execute_isolated(*, run_id: int) -> None:
    """`training_run_execute` in a forked child (workers.isolation): what a run allocates goes back to the
    operating system when it ends, so a long-lived worker stays flat over hundreds of runs; and a run that
    kills its process (out of memory, a native crash) ends FAILED with the reason at once. An exception
    while it runs (the task's soft time limit) kills the child and ends the run FAILED too; a worker
    shutdown or kill leaves it RUNNING for the reaper, as before."""
    before = TrainingRun.objects.filter(pk=run_id).values_list("attempts", flat=True).first()
    if before is None:
        return
    try:
        code = run_in_child(training_run_execute, run_id=run_id)
    except Exception as exc:
        training_run_process_died(run_id=run_id, attempts_before=before, exit_status=type(exc).__name__)
        raise
    if code != 0:
        training_run_process_died(run_id=run_id, attempts_before=before, exit_status=describe_exit(code))


def _execute_claimed(run: TrainingRun) -> None:
    limit_cpu_threads()
    attempt = run.attempts
    sets = training_sets_build(project=run.project, label_policy=run.label_policy, config=run.config)
    revision_ids = sets.train.revision_ids + sets.validation.revision_ids + sets.test.revision_ids
    TrainingRun.objects.filter(pk=run.pk).update(revision_ids=revision_ids)
    imported = run.trigger == "bundle"  # an imported bundle is measured and gated, not trained
    if not len(sets.train) and not imported:
        _finish(
            run.pk,
            attempt,
            RunStatus.FAILED,
            "no training labels: no pool/train case has a current annotation",
        )
        return
    if not len(sets.validation):
        _finish(
            run.pk,
            attempt,
            RunStatus.FAILED,
            "no validation labels: label a validation case, or at least two pool cases (a share of them is"
            " then set aside to validate on)",
        )
        return
    net_cfg = NetworkConfig.from_dict(run.config["network"])
    train_cfg = TrainConfig.from_dict(run.config["train"])
    if imported:
        _register_bundle(run, attempt, sets, net_cfg, train_cfg.batch_size)
        return
    backend = backend_for(run.config)
    monitor = _RunMonitor(run.pk, attempt)
    fitted = backend.fit(_fit_job(run, sets, net_cfg, train_cfg), monitor.progress, monitor.should_stop)
    if monitor.lost:
        return  # the reaper (or a re-claim) owns the run now
    if fitted.cancelled:
        done = len(monitor.epochs)
        _finish(
            run.pk, attempt, RunStatus.CANCELLED, f"cancelled on request after {done} epoch(s); no version"
        )
        return
    if fitted.model is None:
        _finish(run.pk, attempt, RunStatus.FAILED, f"{backend.name} failed: {fitted.error}")
        return
    extra = {**fitted.extra, "epochs_run": len(monitor.epochs)}
    _register(
        run, attempt, sets, fitted.model, fitted.net_cfg, train_cfg.batch_size, extra, fitted.checkpoint
    )


def _fit_job(run: TrainingRun, sets: TrainingSets, net_cfg: NetworkConfig, train_cfg: TrainConfig) -> FitJob:
    """What the run's backend fits: its train and validation cases, the version it starts from (a warm
    start, or the bundle a "monai_bundle" run fine-tunes), and the backend's own options."""
    options = {"nnunet": run.config.get("nnunet"), "monai_bundle": run.config.get("bundle")}
    return FitJob(
        net_cfg=net_cfg,
        train_cfg=train_cfg,
        images=sets.train.images,
        masks=sets.train.masks,
        val_images=sets.validation.images,
        val_masks=sets.validation.masks,
        names=[f"case_{cid}" for cid in sets.train.case_ids],
        init=model_load(run.base_version) if run.base_version is not None else None,
        options=options.get(backend_for(run.config).name) or {},
        modality=run.project.modality,
        scratch=scratch_dir(),
        threads=int(os.environ.get("HITL_TORCH_THREADS", "1")),
    )


def scratch_dir() -> Path:
    """Temporary files of a run beside the media (the same disk the service was given), not in /tmp."""
    path = Path(settings.VAR_DIR) / "tmp"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _register_bundle(
    run: TrainingRun, attempt: int, sets: TrainingSets, net_cfg: NetworkConfig, batch_size: int
) -> None:
    """An imported MONAI bundle (workers.services.model_import): its network, built from the checked
    definition with its own weights, measured and gated like a trained version (no training)."""
    try:
        model = bundle_model_build(run.config["bundle"], net_cfg)
    except BundleRejected as exc:
        _finish(run.pk, attempt, RunStatus.FAILED, f"the bundle was refused: {exc}")
        return
    checkpoint = {"network_def": run.config["bundle"]["network_def"]}
    _register(run, attempt, sets, model, net_cfg, batch_size, {"imported_bundle": True}, checkpoint)


def _register(
    run: TrainingRun,
    attempt: int,
    sets: TrainingSets,
    model,
    net_cfg: NetworkConfig,
    batch_size: int,
    extra: dict[str, Any],
    checkpoint: dict[str, Any],
) -> None:
    """Measure, store and register the version (`checkpoint`: the backend's checkpoint_to_bytes extras)."""
    mc = int(run.config.get("scoring", {}).get("mc_samples", 5))
    metrics = evaluate(model, sets, net_cfg.num_classes, batch_size, mc, backend=backend_for(run.config))
    metrics["active_on_validation"] = active_on_validation(
        run.project, sets, net_cfg.num_classes, batch_size, run_config=run.config
    )
    metrics |= extra
    meta = {"run": run.pk, "project": run.project_id}
    data = checkpoint_to_bytes(model, net_cfg, meta=meta, **checkpoint)
    # Weights first: the version row only ever points at a file that exists.
    path = bytes_save(f"projects/{run.project_id}/models/run-{run.pk}-a{attempt}.ckpt", data)
    model_version_register(
        run_id=run.pk,
        attempt=attempt,
        weights_path=path,
        weights_sha256=hashlib.sha256(data).hexdigest(),
        metrics=metrics,
    )


def _set_metrics(
    model, labelled: LabelledSet, k: int, batch_size: int, backend: ModelBackend
) -> SetMetrics | None:
    return _measured(model, labelled, k, batch_size, backend)[0]


def _measured(
    model, labelled: LabelledSet, k: int, batch_size: int, backend: ModelBackend
) -> tuple[SetMetrics | None, Calibration | None]:
    """Overlap metrics and the calibration of the softmax the proposals come from (one forward pass)."""
    if not len(labelled):
        return None, None
    probs = backend.predict_proba(model, labelled.images, batch_size=batch_size)
    labels = [p.argmax(axis=0).astype(np.uint8) for p in probs]
    return set_metrics(labels, labelled.masks, k), calibration(probs, labelled.masks)


def _dice_of(m: SetMetrics | None) -> float | None:
    return _json_float(m.dice) if m is not None else None


def _per_class(m: SetMetrics | None) -> list[float | None]:
    return [c.pooled_dice for c in m.classes] if m is not None else []


def _sampled_calibration(
    model, labelled: LabelledSet, samples: int, batch_size: int, backend: ModelBackend
) -> dict | None:
    """Calibration of the mean of the predictive samples (MC dropout, or mirror TTA for a network without
    dropout) on the validation cases: the distribution pool scoring and the uncertainty maps read."""
    if not len(labelled):
        return None
    probs = backend.predictive_proba(model, labelled.images, samples=samples, batch_size=batch_size)
    sampling = backend.sampling(model)
    return {
        **calibration(probs, labelled.masks).to_dict(),
        "mc_samples": sample_count(samples, sampling),
        "sampling": sampling,
    }


def evaluate(
    model,
    sets: TrainingSets,
    num_classes: int,
    batch_size: int,
    mc_samples: int = 5,
    *,
    backend: ModelBackend,
) -> dict[str, Any]:
    """Validation and test metrics (workers.ml.models.metrics: pooled Dice over the set, per class, the
    per-case Dice where the class is present and false positives on cases without it), the expected
    calibration error of the validation softmax and of the sampled mean that scoring reads, plus the set
    sizes."""
    val, val_calibration = _measured(model, sets.validation, num_classes, batch_size, backend)
    test = _set_metrics(model, sets.test, num_classes, batch_size, backend)
    sampled = _sampled_calibration(model, sets.validation, mc_samples, batch_size, backend)
    return {
        "backend": backend.name,
        "validation_calibration": val_calibration.to_dict() if val_calibration is not None else None,
        "validation_calibration_mc": sampled,
        "dice_metric": METRIC_NAME,
        "validation_dice": _dice_of(val),
        "test_dice": _dice_of(test),
        "per_class": {"validation": _per_class(val), "test": _per_class(test)},
        "validation": val.to_dict() if val is not None else None,
        "test": test.to_dict() if test is not None else None,
        "labelled_cases": len(sets.train),
        "validation_cases": len(sets.validation),
        "validation_source": sets.validation_source,
        "test_cases": len(sets.test),
    }


def active_on_validation(
    project: Project, sets: TrainingSets, num_classes: int, batch_size: int, *, run_config: dict
) -> dict | None:
    """The active version's Dice on this run's validation cases, by the same metric: gating compares the
    two models on the same cases (the validation set grows, and older versions' stored figures may use an
    older metric). None without an active version or one that cannot read these images."""
    version = active_version(project=project)
    if version is None or not len(sets.validation):
        return None
    net = version.config.get("network", {})
    if net.get("num_classes") != num_classes:
        return None
    validation = sets.validation
    if context_of(version.config) != context_of(run_config):  # e.g. a 2D version and a 2.5D run
        images = labelled_images(validation.case_ids, config=version.config)
        if images[0].shape[0] != net.get("in_channels", 1):
            return None
        validation = LabelledSet(case_ids=validation.case_ids, images=images, masks=validation.masks)
    model = model_load(version)
    m = _set_metrics(model, validation, num_classes, batch_size, backend_for(version.config))
    return {"version_id": version.pk, "validation_dice": _dice_of(m)}
