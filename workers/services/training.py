"""Training runs: start (validated config, one open run per project), execute (idempotent, progress and
heartbeat in the run row, cancellable), automatic triggering, and reaping runs whose worker died.

Run lifecycle: QUEUED -> RUNNING -> SUCCEEDED | FAILED | CANCELLED. Only `training_run_execute` moves a run
to RUNNING (claiming it, attempt += 1); every later write of that execution is conditioned on
(status RUNNING, attempts == its attempt), so a reaped or re-claimed run is never overwritten by a zombie.
Reaper policy: a RUNNING run without a heartbeat for STALE_AFTER_S lost its worker (killed, restarted,
out of memory). Its first attempt is re-queued (QUEUED again, its execute sent through the outbox), so a
restarted worker completes it exactly once (the claim admits one execution at a time, and registration is
the run's last, atomic step); a run whose second attempt is lost too is marked FAILED ("worker lost": a run
that kills its worker twice, e.g. out of memory, would likely kill the next one as well).
"""

import logging
import secrets
from datetime import timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from annotations.models import Annotation, AnnotationKind, Project
from hitl.core import task_names
from hitl.core.audit import audit_record
from hitl.core.errors import ConflictError
from hitl.core.outbox import outbox_enqueue
from hitl.core.types import User
from workers.ml.models.checkpoint_format import BUNDLE_BACKEND
from workers.models import OPEN_RUN, ModelVersion, RunStatus, TrainingRun
from workers.selectors.settings import training_settings_for
from workers.services.registry import active_version
from workers.services.training_config import (
    context_of,
    training_config_build,
    training_config_validate,
    warm_start_apply,
)

log = logging.getLogger(__name__)

STALE_AFTER_S = 300.0  # a RUNNING run without a heartbeat this long is considered lost
MAX_ATTEMPTS = 2  # a redelivered execute may re-claim a stale run once


@transaction.atomic
def training_run_start(
    *,
    project: Project,
    requested_by: User | None = None,
    trigger: str = "manual",
    config_overrides: dict[str, Any] | None = None,
) -> TrainingRun:
    """Create a QUEUED run and enqueue its execution after commit. Raises ConflictError("run_open") when
    the project already has a queued or running run (also enforced by a partial unique constraint), and
    ValidationError for bad overrides. Warm-starts from the active version when its network matches."""
    project_overrides = training_settings_for(project).training_config
    overrides = training_config_validate({**project_overrides, **(config_overrides or {})})
    run_open_refuse(project)
    seed = overrides.get("seed", secrets.randbelow(2**31))
    config = training_config_build(project=project, overrides=overrides, seed=seed)
    active = active_version(project=project)
    base = (
        active
        if active
        and config["warm_start"]
        and active.config.get("backend") == config.get("backend")  # never nnU-Net or bundle weights
        and active.config.get("network") == config["network"]
        and context_of(active.config) == context_of(config)
        else None
    )
    if config.get("backend") == BUNDLE_BACKEND:
        base = bundle_to_fine_tune(project)
        config = bundle_fine_tune_config(config, base)
    if base is not None:
        config = warm_start_apply(config)
    run = run_queue(
        project=project,
        trigger=trigger,
        requested_by=requested_by if getattr(requested_by, "is_authenticated", False) else None,
        config=config,
        seed=seed,
        base_version=base,
    )
    audit_record(
        actor=requested_by,
        action="training_run.start",
        project=project,
        target=run,
        details={"trigger": trigger, "overrides": overrides, "base_version": base.pk if base else None},
    )
    return run


def bundle_to_fine_tune(project: Project) -> ModelVersion:
    """The version a "monai_bundle" run fine-tunes: the active version when it is an imported (or already
    fine-tuned) MONAI bundle, else the project's newest such version. ValidationError when there is none."""
    active = active_version(project=project)
    if active is not None and active.config.get("backend") == BUNDLE_BACKEND:
        return active
    newest = (
        ModelVersion.objects.filter(project=project, config__backend=BUNDLE_BACKEND)
        .order_by("-number")
        .first()
    )
    if newest is None:
        raise ValidationError(
            {
                "backend": "fine-tuning a MONAI bundle needs an imported one: import a bundle on the ML page first"
            }
        )
    return newest


def bundle_fine_tune_config(config: dict[str, Any], base: ModelVersion) -> dict[str, Any]:
    """A run's config that fine-tunes `base` (a bundle version): its network, input and explanation methods,
    and its bundle's checked definition (the zip itself is needed at import only)."""
    bundle = {k: v for k, v in base.config["bundle"].items() if k not in ("path", "sha256")}
    return {
        **config,
        "backend": BUNDLE_BACKEND,
        "bundle": {**bundle, "fine_tunes": base.pk},
        "network": base.config["network"],
        "input": base.config["input"],
        "explain_methods": base.config.get("explain_methods", config["explain_methods"]),
    }


_RUN_OPEN = "this project already has a queued or running training run"


def run_open_refuse(project: Project) -> None:
    """ConflictError("run_open") while the project has a queued or running run."""
    if TrainingRun.objects.filter(project=project, status__in=OPEN_RUN).exists():
        raise ConflictError("run_open", _RUN_OPEN)


def run_queue(
    *,
    project: Project,
    trigger: str,
    requested_by: User | None,
    config: dict[str, Any],
    seed: int,
    base_version=None,
) -> TrainingRun:
    """Create a QUEUED run and send its execution through the outbox (after the caller's transaction
    commits). ConflictError("run_open") when a concurrent start won the race (the partial unique
    constraint: one open run per project)."""
    try:
        with transaction.atomic():
            run = TrainingRun.objects.create(
                project=project,
                trigger=trigger,
                requested_by=requested_by,
                base_version=base_version,
                config=config,
                seed=seed,
                label_policy=project.label_policy,
            )
    except IntegrityError as exc:
        raise ConflictError("run_open", _RUN_OPEN) from exc
    _enqueue_execute(run.pk)
    return run


def _enqueue_execute(run_id: int) -> None:
    """Inside the caller's transaction, through the outbox: if the broker is down now, the sweep sends it
    later and the run is not left queued forever."""
    outbox_enqueue(task=task_names.TRAINING_RUN_EXECUTE, kwargs={"run_id": run_id})


@transaction.atomic
def training_run_cancel(*, run: TrainingRun, actor: User) -> TrainingRun:
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


def is_stale(run: TrainingRun, now, stale_after_s: float) -> bool:
    last = run.heartbeat_at or run.started_at
    return last is None or (now - last).total_seconds() > stale_after_s


def mark(run: TrainingRun, status: str, outcome: str) -> None:
    run.status, run.outcome, run.finished_at = status, outcome[:2000], timezone.now()
    run.save(update_fields=["status", "outcome", "finished_at"])


def training_autotrigger(*, project: Project) -> TrainingRun | None:
    """Start an "auto" run when auto_retrain_every > 0, no run is open, and at least that many reader
    annotations were created since the newest revision the last finished run (succeeded or failed: a run
    that failed, e.g. for lack of validation labels, is not retried after every single submission) used."""
    every = training_settings_for(project).auto_retrain_every
    if every <= 0:
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
    if new < every:
        return None
    try:
        return training_run_start(project=project, requested_by=None, trigger="auto")
    except ConflictError:
        return None
    except ValidationError as exc:  # e.g. a "monai_bundle" project whose bundle versions were all deleted
        log.warning("project %s: no automatic run: %s", project.pk, exc.messages)
        return None


def training_runs_reap(*, stale_after_s: float = STALE_AFTER_S) -> list[int]:
    """RUNNING runs whose heartbeat is older than `stale_after_s`: re-queued when attempts are left, else
    marked FAILED ("worker lost"). Returns their ids. Nothing was registered for them: registration is the
    run's last, atomic step."""
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
            if run.status != RunStatus.RUNNING or not is_stale(run, timezone.now(), stale_after_s):
                continue
            lost = f"worker lost: no heartbeat for over {int(stale_after_s)} s (after {len(run.epochs)} epoch(s))"
            if run.cancel_requested:
                mark(run, RunStatus.CANCELLED, f"cancelled ({lost})")
            elif run.attempts < MAX_ATTEMPTS:
                _requeue(run, f"{lost}; queued again (attempt {run.attempts + 1} of {MAX_ATTEMPTS})")
            else:
                mark(run, RunStatus.FAILED, f"{lost}; no version was registered")
            reaped.append(pk)
    if reaped:
        log.warning("reaped training runs %s (worker lost)", reaped)
    return reaped


def training_run_process_died(*, run_id: int, attempts_before: int, exit_status: str) -> bool:
    """The process that executed the run (workers.isolation's child) died without ending it: out of memory,
    killed by hand, a crashing native library. End the run FAILED now, with the reason, instead of leaving it
    to the reaper (which would run it again, likely to the same death). Only the attempt that process
    claimed (attempts_before + 1), or a run it died before claiming; True when a run was ended."""
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().filter(pk=run_id).first()
        if run is None:
            return False
        claimed = run.status == RunStatus.RUNNING and run.attempts == attempts_before + 1
        unclaimed = run.status == RunStatus.QUEUED and run.attempts == attempts_before
        if not (claimed or unclaimed):
            return False
        mark(run, RunStatus.FAILED, f"the training process died ({exit_status}); no version was registered")
    log.warning("training run %s: its process died (%s)", run_id, exit_status)
    return True


def _requeue(run: TrainingRun, outcome: str) -> None:
    """A lost attempt goes back to the queue (in the caller's transaction; the execute is sent after commit
    through the outbox, so a broker outage cannot lose it)."""
    run.status, run.outcome, run.progress, run.epochs = RunStatus.QUEUED, outcome[:2000], 0.0, []
    run.heartbeat_at = None
    run.save(update_fields=["status", "outcome", "progress", "epochs", "heartbeat_at"])
    _enqueue_execute(run.pk)
