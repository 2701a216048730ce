"""The model registry: registering a trained version, gating it, promote and rollback.

Invariants (backed by DB constraints): at most one ACTIVE version per project; version numbers are unique
per project. A version row exists only once its weights are on storage (the caller saves them first), and
the row, the run's result and its status are written in one transaction, so a crash never leaves a
half-registered version. Whenever a version becomes active, scoring of the pool is enqueued after commit.
"""

import logging

from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from annotations.models import Project
from hitl.core import task_names
from hitl.core.audit import audit_record
from hitl.core.errors import ConflictError
from hitl.core.lanes import INTERACTIVE
from hitl.core.outbox import outbox_enqueue
from hitl.core.storage import delete_quietly
from hitl.core.types import User
from workers.models import ModelVersion, RunStatus, TrainingRun, VersionState
from workers.selectors.datasets import queue_head_ids
from workers.selectors.settings import training_settings_for

log = logging.getLogger(__name__)


QUEUE_HEAD_PROPOSALS = 10  # cases at the head of the queue proposed for before the pool is re-scored


def active_version(*, project: Project | int) -> ModelVersion | None:
    project_id = project if isinstance(project, int) else project.pk
    return ModelVersion.objects.filter(project_id=project_id, state=VersionState.ACTIVE).first()


def gating_decide(*, tolerance: float, metrics: dict, active: ModelVersion | None) -> tuple[bool, str]:
    """(activate?, outcome in words). A candidate becomes active when there is no active version or its
    validation Dice >= the active one's minus `tolerance` (the project's TrainingSettings.gating_tolerance).
    The active one's Dice is the one the run measured on the same validation cases
    (`metrics["active_on_validation"]`); without it, its stored Dice, only when measured by the same metric."""
    new = metrics.get("validation_dice")
    if active is None:
        return True, f"promoted: first active version (validation Dice {_fmt(new)})"
    old, comparable = _active_dice(metrics, active)
    if not comparable:
        return False, (
            f"kept as candidate: validation Dice {_fmt(new)} is not comparable with active v{active.number}'s"
            " (another metric or other cases); promote it by hand after checking"
        )
    if new is None or old is None:
        return False, f"kept as candidate: validation Dice missing (new {_fmt(new)}, active {_fmt(old)})"
    bar = old - tolerance
    if new >= bar:
        return True, (
            f"promoted: validation Dice {_fmt(new)} >= active v{active.number} {_fmt(old)} "
            f"- tolerance {tolerance:.3f}"
        )
    return False, (
        f"kept as candidate: validation Dice {_fmt(new)} < active v{active.number} {_fmt(old)} "
        f"- tolerance {tolerance:.3f} = {_fmt(bar)}"
    )


def _active_dice(metrics: dict, active: ModelVersion) -> tuple[float | None, bool]:
    """(the active version's Dice to compare with, whether the two are comparable)."""
    same_cases = metrics.get("active_on_validation") or {}
    if same_cases and same_cases.get("version_id") == active.pk:
        return same_cases.get("validation_dice"), True
    return active.metrics.get("validation_dice"), active.metrics.get("dice_metric") == metrics.get(
        "dice_metric"
    )


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _activate(*, version: ModelVersion, previous: ModelVersion | None, first_time: bool = True) -> None:
    """Retire `previous`, make `version` active (in the caller's transaction), rescore after commit.
    `first_time=False` (rollback) keeps the original promoted_at, so repeated rollbacks walk back in time."""
    if previous is not None and previous.pk != version.pk:
        previous.state = VersionState.RETIRED
        previous.save(update_fields=["state"])
    version.state = VersionState.ACTIVE
    if first_time or version.promoted_at is None:
        version.promoted_at = timezone.now()
    version.save(update_fields=["state", "promoted_at"])
    project_id, version_id = version.project_id, version.pk
    _enqueue_scoring(project_id, version_id)


def _enqueue_scoring(project_id: int, version_id: int) -> None:
    """Inside the caller's transaction, through the outbox (sent after commit, swept if the broker is down).
    Proposals for the current head of the queue go first: the cases readers claim next show the new version
    within seconds, while the whole pool is re-scored (and re-ordered) after them."""
    head = queue_head_ids(project_id=project_id, n=QUEUE_HEAD_PROPOSALS)
    if head:
        outbox_enqueue(
            task=task_names.PROPOSAL_COMPUTE,
            kwargs={"version_id": version_id, "case_ids": head},
            queue=INTERACTIVE,  # readers claim these next: never behind a training run or a report
        )
    outbox_enqueue(task=task_names.SCORING_RUN, kwargs={"project_id": project_id, "version_id": version_id})


@transaction.atomic
def model_version_register(
    *, run_id: int, attempt: int, weights_path: str, weights_sha256: str, metrics: dict
) -> ModelVersion | None:
    """Register the weights of a RUNNING run (attempt `attempt`) as a new version, gate it, and finish the
    run as SUCCEEDED, all in one transaction. Returns None (and deletes the weights file after commit)
    when the run is no longer this attempt's to finish (reaped, cancelled, re-claimed)."""
    # The run's row alone (FOR UPDATE of the joined project would block every submission's audit insert).
    run = TrainingRun.objects.select_for_update(of=("self",)).select_related("project").get(pk=run_id)
    if run.status != RunStatus.RUNNING or run.attempts != attempt:
        transaction.on_commit(lambda: delete_quietly([weights_path]))
        return None
    project = run.project
    number = (ModelVersion.objects.filter(project=project).aggregate(n=Max("number"))["n"] or 0) + 1
    version = ModelVersion.objects.create(
        project=project,
        number=number,
        state=VersionState.CANDIDATE,
        parent=run.base_version,
        weights_path=weights_path,
        weights_sha256=weights_sha256,
        config=run.config,
        metrics=metrics,
    )
    active = (
        ModelVersion.objects.select_for_update(no_key=True)
        .filter(project=project, state=VersionState.ACTIVE)
        .first()
    )
    tolerance = training_settings_for(project).gating_tolerance
    promote, outcome = gating_decide(tolerance=tolerance, metrics=metrics, active=active)
    if promote:
        _activate(version=version, previous=active)
    run.result_version = version
    run.status = RunStatus.SUCCEEDED
    source = metrics.get("validation_source") or ""
    run.outcome = f"v{number} {outcome}" + (f"; validation {source}" if source.startswith("carved") else "")
    run.progress = 100.0
    run.finished_at = timezone.now()
    run.save(update_fields=["result_version", "status", "outcome", "progress", "finished_at"])
    audit_record(
        actor=None,
        action="model_version.register",
        project=project,
        target=version,
        details={"run": run.pk, "number": number, "activated": promote, "metrics": _audit_metrics(metrics)},
    )
    return version


def _audit_metrics(metrics: dict) -> dict:
    return {k: metrics.get(k) for k in ("validation_dice", "test_dice", "labelled_cases")}


@transaction.atomic
def model_version_promote(*, version: ModelVersion, actor: User) -> ModelVersion:
    """Make a candidate or retired version active by hand (bypasses gating; audited)."""
    version = ModelVersion.objects.select_for_update(no_key=True).get(pk=version.pk)
    if version.state == VersionState.ACTIVE:
        raise ConflictError("already_active", f"v{version.number} is already the active version")
    previous = (
        ModelVersion.objects.select_for_update(no_key=True)
        .filter(project_id=version.project_id, state=VersionState.ACTIVE)
        .first()
    )
    _activate(version=version, previous=previous)
    audit_record(
        actor=actor,
        action="model_version.promote",
        project=version.project,
        target=version,
        details={"number": version.number, "previous": previous.number if previous else None},
    )
    return version


@transaction.atomic
def model_version_rollback(*, project: Project, actor: User) -> ModelVersion:
    """Re-activate the previous active version: the retired, once-active one promoted most recently before
    the current active one (repeated rollbacks walk further back). Raises ConflictError if there is none."""
    current = (
        ModelVersion.objects.select_for_update(no_key=True)
        .filter(project=project, state=VersionState.ACTIVE)
        .first()
    )
    candidates = ModelVersion.objects.filter(
        project=project, state=VersionState.RETIRED, promoted_at__isnull=False
    )
    if current is not None and current.promoted_at is not None:
        candidates = candidates.filter(promoted_at__lt=current.promoted_at)
    target = candidates.order_by("-promoted_at", "-number").first()
    if target is None:
        raise ConflictError("no_previous_version", "there is no earlier active version to roll back to")
    _activate(version=target, previous=current, first_time=False)
    audit_record(
        actor=actor,
        action="model_version.rollback",
        project=project,
        target=target,
        details={"number": target.number, "from": current.number if current else None},
    )
    return target
