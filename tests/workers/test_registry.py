from datetime import timedelta

import numpy as np
import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from annotations.models import Role
from hitl.core import task_names
from hitl.core.errors import ConflictError
from hitl.core.models import AuditEvent
from tests.factories import TrainingSettingsFactory
from tests.workers.test_training_helpers import make_version
from workers.models import ModelVersion, VersionState
from workers.selectors.settings import training_settings_for
from workers.services.registry import gating_decide, model_version_promote, model_version_rollback


@pytest.fixture
def scoring_calls(monkeypatch):
    calls = []
    monkeypatch.setattr("workers.services.registry._enqueue_scoring", lambda p, v: calls.append(v))
    return calls


def test_gating_uses_the_tolerance(project):
    TrainingSettingsFactory(project=project, gating_tolerance=0.02)
    tolerance = training_settings_for(project).gating_tolerance
    active = ModelVersion(number=3, metrics={"validation_dice": 0.80})
    assert gating_decide(tolerance=tolerance, metrics={"validation_dice": 0.7}, active=None)[0]
    ok, outcome = gating_decide(tolerance=tolerance, metrics={"validation_dice": 0.785}, active=active)
    assert ok and "0.7850 >= active v3 0.8000" in outcome
    ok, outcome = gating_decide(tolerance=tolerance, metrics={"validation_dice": 0.77}, active=active)
    assert not ok and outcome == (
        "kept as candidate: validation Dice 0.7700 < active v3 0.8000 - tolerance 0.020 = 0.7800"
    )


def test_one_active_version_per_project_is_a_constraint(project):
    make_version(project, number=1, state=VersionState.ACTIVE)
    with pytest.raises(IntegrityError), transaction.atomic():
        make_version(project, number=2, state=VersionState.ACTIVE)


def test_promote_then_rollback_walks_back(project, member, scoring_calls, django_capture_on_commit_callbacks):
    ml = member(Role.ML_ENGINEER)
    t0 = timezone.now() - timedelta(hours=2)
    v1 = make_version(project, number=1, state=VersionState.RETIRED, promoted_at=t0)
    v2 = make_version(project, number=2, state=VersionState.ACTIVE, promoted_at=t0 + timedelta(hours=1))
    v3 = make_version(project, number=3, val_dice=0.1)
    with django_capture_on_commit_callbacks(execute=True):
        model_version_promote(version=v3, actor=ml)
    assert scoring_calls == [v3.pk]
    states = dict(ModelVersion.objects.values_list("number", "state"))
    assert states == {1: "retired", 2: "retired", 3: "active"}
    with pytest.raises(ConflictError):
        model_version_promote(version=v3, actor=ml)
    with django_capture_on_commit_callbacks(execute=True):
        assert model_version_rollback(project=project, actor=ml).pk == v2.pk
    assert model_version_rollback(project=project, actor=ml).pk == v1.pk  # repeated: further back
    with pytest.raises(ConflictError) as err:
        model_version_rollback(project=project, actor=ml)
    assert err.value.code == "no_previous_version"
    assert dict(ModelVersion.objects.values_list("number", "state")) == {
        1: "active",
        2: "retired",
        3: "retired",
    }
    assert scoring_calls == [v3.pk, v2.pk, v1.pk]  # every activation queues a re-scoring (via the outbox)
    actions = list(AuditEvent.objects.filter(project=project).values_list("action", flat=True))
    assert actions.count("model_version.rollback") == 2 and "model_version.promote" in actions


def test_an_empty_predictor_is_never_promoted_over_a_model_that_finds_the_structure():
    """Sparse validation data (one slice of ten holds the structure): by the pooled Dice the empty predictor
    scores 0 and the finder 1, so gating keeps the empty one as a candidate, whatever the tolerance."""
    import numpy as np

    from workers.ml.models.metrics import METRIC_NAME, set_metrics

    truths = [np.zeros((8, 8), np.uint8) for _ in range(9)] + [np.pad(np.ones((4, 4), np.uint8), 2)]
    empty = set_metrics([np.zeros_like(t) for t in truths], truths, 2).dice
    finder = set_metrics(truths, truths, 2).dice
    active = ModelVersion(pk=7, number=3, metrics={"validation_dice": finder, "dice_metric": METRIC_NAME})
    candidate = {"validation_dice": empty, "dice_metric": METRIC_NAME}
    for tolerance in (0.0, 0.01, 0.5):
        assert not gating_decide(tolerance=tolerance, metrics=candidate, active=active)[0]
    assert gating_decide(
        tolerance=0.0, metrics={"validation_dice": finder, "dice_metric": METRIC_NAME}, active=active
    )[0]


def test_gating_compares_on_the_same_cases_and_refuses_figures_of_another_metric():
    old_metric = ModelVersion(pk=5, number=2, metrics={"validation_dice": 0.87})  # per-slice mean: inflated
    measured = {"validation_dice": 0.6, "dice_metric": "pooled_dice"}
    ok, outcome = gating_decide(tolerance=0.01, metrics=measured, active=old_metric)
    assert not ok and "not comparable" in outcome
    same_cases = {**measured, "active_on_validation": {"version_id": 5, "validation_dice": 0.02}}
    ok, outcome = gating_decide(tolerance=0.01, metrics=same_cases, active=old_metric)
    assert ok and "0.6000 >= active v2 0.0200" in outcome
    other = {**measured, "active_on_validation": {"version_id": 99, "validation_dice": 0.02}}
    assert not gating_decide(tolerance=0.01, metrics=other, active=old_metric)[0]  # measured another version


def test_an_activation_proposes_for_the_queue_head_before_the_pool_is_rescored(
    project, member, django_capture_on_commit_callbacks, monkeypatch
):
    """Loop closure: the cases readers claim next get the new version's proposal first (one small task),
    and only then is the whole pool re-scored."""
    from hitl.core.models import OutboxMessage
    from tests.workers.test_training_helpers import add_case
    from workers.services import registry

    monkeypatch.setattr(registry, "QUEUE_HEAD_PROPOSALS", 2)
    ml = member(Role.ML_ENGINEER)
    img = np.zeros((16, 16), dtype=np.float32)
    cases = [add_case(project, user=ml, image=img, mask=None, split="pool") for _ in range(4)]
    for case, priority in zip(cases, (0.1, 0.9, 0.5, 0.7), strict=True):
        case.priority = priority
        case.save(update_fields=["priority"])
    version = make_version(project, number=1)
    before = OutboxMessage.objects.count()
    model_version_promote(version=version, actor=ml)
    sent = list(OutboxMessage.objects.order_by("id")[before:].values_list("task", "kwargs", "queue"))
    assert [t for t, _, _ in sent] == [task_names.PROPOSAL_COMPUTE, task_names.SCORING_RUN]
    assert sent[0][1] == {"version_id": version.pk, "case_ids": [cases[1].pk, cases[3].pk]}
    assert [q for _, _, q in sent] == ["interactive", ""]  # the head on the interactive lane, scoring batch
