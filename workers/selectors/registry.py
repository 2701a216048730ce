"""Reads of the machine side: runs, versions, learning curve, and the ML part of a case's payload."""

from dataclasses import dataclass
from typing import Any

from django.db.models import QuerySet

from annotations.models import Case, Project
from hitl.core.permissions import project_object_for_user
from hitl.core.types import User
from workers.ml.explain.policy import NOMINAL_COST, is_interactive, methods_for_arch
from workers.models import (
    CaseScore,
    Explanation,
    ModelVersion,
    Prediction,
    TrainingRun,
    TrainingSettings,
    VersionState,
)
from workers.selectors.settings import training_settings_for


def training_run_list(*, project: Project) -> QuerySet[TrainingRun]:
    return (
        TrainingRun.objects.filter(project=project)
        .select_related("requested_by", "result_version", "base_version")
        .order_by("-created_at", "-id")
    )


def training_run_get_for_user(*, user: User, run_id: int) -> tuple[TrainingRun, set[str]]:
    """The run and the caller's roles in its project; 404 for non-members, like a missing run."""
    run = (
        TrainingRun.objects.select_related("project", "requested_by", "result_version", "base_version")
        .filter(pk=run_id)
        .first()
    )
    return project_object_for_user(run, user=user, what="training run")


def model_version_list(*, project: Project) -> QuerySet[ModelVersion]:
    return ModelVersion.objects.filter(project=project).select_related("parent").order_by("-number")


def model_version_get_for_user(*, user: User, version_id: int) -> tuple[ModelVersion, set[str]]:
    version = ModelVersion.objects.select_related("project", "parent").filter(pk=version_id).first()
    return project_object_for_user(version, user=user, what="model version")


def learning_curve(*, project: Project) -> list[dict[str, Any]]:
    """One point per version, oldest first: labelled cases -> validation and test Dice; `promoted` marks
    versions that were active at some time (candidates kept by gating never were)."""
    rows = ModelVersion.objects.filter(project=project).order_by("number")
    return [
        {
            "version_id": v.pk,
            "number": v.number,
            "state": v.state,
            "labelled_cases": v.metrics.get("labelled_cases"),
            "validation_dice": v.metrics.get("validation_dice"),
            "test_dice": v.metrics.get("test_dice"),
            "dice_metric": v.metrics.get("dice_metric"),  # None: the older per-slice mean, not comparable
            "created_at": v.created_at,
            "promoted": v.promoted_at is not None or v.state == VersionState.ACTIVE,
        }
        for v in rows
    ]


def _version_brief(v: ModelVersion | None) -> dict[str, Any] | None:
    if v is None:
        return None
    return {
        "id": v.pk,
        "number": v.number,
        "state": v.state,
        "metrics": v.metrics,
        "promoted_at": v.promoted_at,
    }


def explanation_brief(e: Explanation, active_id: int | None) -> dict[str, Any]:
    """One stored map as the editor lists it (`e.model_version` should be select_related)."""
    return {
        "id": e.pk,
        "method": e.method,
        "map_path": e.map_path,
        "model_version_id": e.model_version_id,
        "model_version": e.model_version.number,
        "stale": e.model_version_id != active_id,
        "interactive": is_interactive(e.method),
        "params": e.params,
        "seconds": e.seconds,
        "cost_forward_units": e.cost_forward_units,
        "created_at": e.created_at,
    }


def _explanations(case: Case, active_id: int | None) -> list[dict[str, Any]]:
    rows = (
        Explanation.objects.filter(case=case)
        .select_related("model_version")
        .order_by("-model_version__number", "method")
    )
    return [explanation_brief(e, active_id) for e in rows]


def explain_catalogue(
    active: ModelVersion | None, explanations: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Every method that can explain the active model, cheapest first: its nominal cost in forward passes,
    whether it runs on demand (interactive) or in the background queue, and whether the active version's
    map of this case exists."""
    if active is None:
        return []
    done = {x["method"] for x in explanations if x["model_version_id"] == active.pk}
    methods = sorted(methods_for_arch(active.arch), key=lambda m: (NOMINAL_COST.get(m, float("inf")), m))
    return [
        {
            "method": m,
            "nominal_cost": NOMINAL_COST.get(m),
            "interactive": is_interactive(m),
            "available": m in done,
        }
        for m in methods
    ]


def explanations_for_case(case: Case) -> list[dict[str, Any]]:
    """Every explanation of the case, newest version first; `stale` = made by a version that is not the
    active one (or none is active). Two queries."""
    active = ModelVersion.objects.filter(project_id=case.project_id, state=VersionState.ACTIVE).first()
    return _explanations(case, active.pk if active else None)


def case_ml_payload(case: Case) -> dict[str, Any]:
    """The ML side of a case for the reader: active version, the proposal (mask + uncertainty map paths on
    the storage backend, from the active version, else the newest one marked stale), the active version's
    score of the case, and the explanations (with `stale` flags). Four queries, whatever the history."""
    active = ModelVersion.objects.filter(project_id=case.project_id, state=VersionState.ACTIVE).first()
    active_id = active.pk if active else None
    predictions = list(
        Prediction.objects.filter(case=case)
        .select_related("model_version")
        .order_by("-model_version__number")
    )
    prediction = next((p for p in predictions if p.model_version_id == active_id), None) or (
        predictions[0] if predictions else None
    )
    score = (
        CaseScore.objects.filter(case=case, model_version_id=active_id).first()
        if active_id is not None
        else None
    )
    explanations = _explanations(case, active_id)
    return {
        "model_version": _version_brief(active),
        "proposal": (
            {
                "mask_path": prediction.mask_path,
                "uncertainty_path": prediction.uncertainty_path,
                "model_version_id": prediction.model_version_id,
                "model_version": prediction.model_version.number,
                "stale": prediction.model_version_id != active_id,
            }
            if prediction is not None
            else None
        ),
        "uncertainty_path": prediction.uncertainty_path if prediction is not None else None,
        "score": (
            {
                "strategy": score.strategy,
                "score": score.score,
                "rank": score.rank,
                "components": score.components,
            }
            if score is not None
            else None
        ),
        "explanations": explanations,
        "explain_catalogue": explain_catalogue(active, explanations),
    }


@dataclass(frozen=True)
class ProposalRef:
    """What a model version proposed for a case: `mask_path` is None when it made no proposal for it."""

    version_id: int
    mask_path: str | None


def proposal_ref(*, case: Case, version_id: int) -> ProposalRef | None:
    """The proposal of version `version_id` for `case`; None when that version is not one of the case's
    project (the clinical side measures correction effort against it)."""
    if not ModelVersion.objects.filter(pk=version_id, project_id=case.project_id).exists():
        return None
    path = (
        Prediction.objects.filter(case=case, model_version_id=version_id)
        .values_list("mask_path", flat=True)
        .first()
    )
    return ProposalRef(version_id=version_id, mask_path=path or None)


def prediction_layer_path(*, case: Case, version_id: int, layer: str) -> str | None:
    """The stored path of `layer` ("mask_path" or "uncertainty_path") of version `version_id`'s prediction
    for `case` (None when there is none)."""
    row = (
        Prediction.objects.filter(case=case, model_version_id=version_id)
        .values_list(layer, flat=True)
        .first()
    )
    return row or None


def proposal_missing(*, project_id: int, case_id: int) -> int | None:
    """The id of the project's active version when it has no proposal for the case yet; None when it has one
    or there is no active version. One indexed query (a claim asks this)."""
    return (
        ModelVersion.objects.filter(project_id=project_id, state=VersionState.ACTIVE)
        .exclude(predictions__case_id=case_id)
        .values_list("pk", flat=True)
        .first()
    )


def proposals_missing(*, project_id: int, case_ids: list[int]) -> tuple[int | None, list[int]]:
    """(the active version's id, those of `case_ids` it has no proposal for), or (None, []) without an
    active version. Two indexed queries; one case: see `proposal_missing`."""
    if len(case_ids) == 1:
        version_id = proposal_missing(project_id=project_id, case_id=case_ids[0])
        return version_id, list(case_ids) if version_id is not None else []
    version_id = (
        ModelVersion.objects.filter(project_id=project_id, state=VersionState.ACTIVE)
        .values_list("pk", flat=True)
        .first()
    )
    if version_id is None:
        return None, []
    done = set(
        Prediction.objects.filter(model_version_id=version_id, case_id__in=case_ids).values_list(
            "case_id", flat=True
        )
    )
    return version_id, [c for c in case_ids if c not in done]


def active_version_number(*, project_id: int) -> int | None:
    """The number of the project's active version (None before the first): one indexed query."""
    return (
        ModelVersion.objects.filter(project_id=project_id, state=VersionState.ACTIVE)
        .values_list("number", flat=True)
        .first()
    )


def auto_retrain_on(*, project_id: int) -> bool:
    """Whether the project retrains automatically (its training settings' auto_retrain_every > 0; off for a
    project that never saved any). One query. The clinical side asks this before queueing the retraining
    check after a submission."""
    return TrainingSettings.objects.filter(project_id=project_id, auto_retrain_every__gt=0).exists()


def query_strategy_label(*, project_id: int) -> str:
    """The project's query strategy in words (its default for a project that never saved settings), for
    the clinical side's project page. One query."""
    return training_settings_for(project_id).get_query_strategy_display()
