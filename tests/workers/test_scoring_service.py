import numpy as np
import pytest
from django.utils import timezone

from annotations.models import Case, Role
from hitl.core import task_names
from tests.factories import TrainingSettingsFactory
from tests.workers.test_training_helpers import make_version, seed_project
from workers.models import CaseScore, VersionState
from workers.services import scoring as scoring_service
from workers.services.scoring import queue_cold_start, scoring_run

COMPONENTS = {"entropy", "bald", "margin", "least_confidence", "variance", "foreground_fraction"}


@pytest.fixture
def pool(project, member):
    return seed_project(project, member(Role.ML_ENGINEER), n_train=0, n_val=0, n_test=0, n_pool=8)["pool"]


@pytest.mark.parametrize("strategy", ["entropy", "bald", "margin", "least_confidence", "random", "diverse"])
def test_scoring_writes_scores_and_the_queue_follows_the_strategy(project, pool, strategy):
    TrainingSettingsFactory(project=project, query_strategy=strategy)
    version = make_version(project, number=1, state=VersionState.ACTIVE)
    assert scoring_run(project_id=project.pk, version_id=version.pk) == len(pool)
    scores = list(CaseScore.objects.filter(model_version=version).order_by("rank"))
    assert [s.rank for s in scores] == list(range(1, len(pool) + 1))
    assert all(set(s.components) == COMPONENTS and s.strategy == strategy for s in scores)
    if strategy not in ("random", "diverse"):  # the strategy's own score falls along the ranking
        values = [s.score for s in scores]
        assert values == sorted(values, reverse=True)
    queue = list(Case.objects.filter(project=project, split="pool").order_by("-priority", "id"))
    assert [c.pk for c in queue] == [s.case_id for s in scores]
    reason = queue[0].queue_reason
    assert reason["strategy"] == strategy and reason["rank"] == 1 and reason["model_version"] == 1
    assert (
        reason["model_version_id"] == version.pk
        and reason["score"] == scores[0].score
        and reason["scored_at"]
    )


def test_bald_ranking_matches_the_components(project, pool):
    TrainingSettingsFactory(project=project, query_strategy="bald")
    version = make_version(project, number=1, state=VersionState.ACTIVE)
    scoring_run(project_id=project.pk, version_id=version.pk)
    bald = [s.components["bald"] for s in CaseScore.objects.filter(model_version=version).order_by("rank")]
    assert bald == sorted(bald, reverse=True)


def test_only_open_pool_cases_are_scored_and_the_rest_drop_back(project, pool):
    Case.objects.filter(pk=pool[0].pk).update(flagged_at=timezone.now())
    Case.objects.filter(pk=pool[1].pk).update(reads_taken=1)  # readers_per_case = 1: no slot left
    version = make_version(project, number=1, state=VersionState.ACTIVE)
    assert scoring_run(project_id=project.pk, version_id=version.pk) == len(pool) - 2
    assert not CaseScore.objects.filter(case__in=pool[:2]).exists()
    assert set(Case.objects.filter(pk__in=[pool[0].pk, pool[1].pk]).values_list("priority", flat=True)) == {
        -1e9
    }


def test_scoring_for_a_version_that_is_not_active_does_nothing(project, pool):
    version = make_version(project, number=1, state=VersionState.CANDIDATE)
    assert scoring_run(project_id=project.pk, version_id=version.pk) == 0
    assert not CaseScore.objects.exists()


def test_rescoring_replaces_scores_and_enqueues_the_queue_head_first(
    project, pool, monkeypatch, django_capture_on_commit_callbacks
):
    sent = []
    monkeypatch.setattr(scoring_service, "HEAD_SIZE", 3)
    kind = {task_names.PROPOSAL_COMPUTE: "p", task_names.EXPLANATION_COMPUTE: "e"}
    monkeypatch.setattr(
        scoring_service, "outbox_enqueue", lambda task, kwargs, queue="": sent.append((kind[task], kwargs))
    )
    version = make_version(project, number=1, state=VersionState.ACTIVE)
    scoring_run(project_id=project.pk, version_id=version.pk)
    with django_capture_on_commit_callbacks(execute=True):
        scoring_run(project_id=project.pk, version_id=version.pk)
    assert CaseScore.objects.count() == len(pool)
    head = list(CaseScore.objects.order_by("rank").values_list("case_id", flat=True))
    assert [k for k, _ in sent] == ["p", "p", "e", "e"]
    assert sent[0][1]["case_ids"] == head[:3] and sent[1][1]["case_ids"] == head[3:]
    assert sent[2][1] == {"version_id": version.pk, "case_ids": head[:3], "methods": ["gradcam", "saliency"]}


def test_cold_start_orders_the_pool_without_a_model(project, pool):
    assert queue_cold_start(project=project) == len(pool)
    queue = list(Case.objects.filter(project=project).order_by("-priority", "id"))
    assert [c.queue_reason["rank"] for c in queue] == list(range(1, len(pool) + 1))
    assert {c.queue_reason["strategy"] for c in queue} == {"coldstart"}
    priorities = [c.priority for c in queue]
    assert len(set(priorities)) == len(pool) and np.all(np.diff(priorities) < 0)
    make_version(project, number=1, state=VersionState.ACTIVE)
    assert queue_cold_start(project=project) == 0  # a model owns the queue now


def test_cold_start_task_runs_the_service(project, pool):
    from workers.tasks import queue_cold_start_task

    assert queue_cold_start_task.delay(project_id=project.pk).get() == len(pool)


def test_the_active_version_proposes_for_test_cases_after_the_pool(
    project, member, monkeypatch, django_capture_on_commit_callbacks
):
    seeded = seed_project(project, member(Role.ML_ENGINEER), n_train=0, n_val=0, n_test=3, n_pool=4)
    sent = []
    monkeypatch.setattr(
        scoring_service, "outbox_enqueue", lambda task, kwargs, queue="": sent.append((task, kwargs))
    )
    version = make_version(project, number=1, state=VersionState.ACTIVE)
    with django_capture_on_commit_callbacks(execute=True):
        scoring_run(project_id=project.pk, version_id=version.pk)
    proposals = [kw["case_ids"] for task, kw in sent if task == task_names.PROPOSAL_COMPUTE]
    assert proposals[-1] == [c.pk for c in seeded["test"]]  # last: after the pool's proposals
    assert {i for ids in proposals[:-1] for i in ids} == {c.pk for c in seeded["pool"]}
