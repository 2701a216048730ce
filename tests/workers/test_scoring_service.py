import numpy as np
import pytest
from django.utils import timezone

from annotations.models import Case, Role
from hitl.core import task_names
from tests.factories import TrainingSettingsFactory
from tests.workers.test_training_helpers import make_version, seed_project
from workers.ml import backends
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


def _scoring_messages():
    from hitl.core.models import OutboxMessage

    return list(OutboxMessage.objects.filter(task=task_names.SCORING_RUN).order_by("id"))


def _files_under(prefix: str) -> list[str]:
    from pathlib import Path

    from django.conf import settings

    return sorted(str(p) for p in Path(settings.MEDIA_ROOT, prefix).rglob("*") if p.is_file())


def _pixel_mean_scores(model, images, mc_samples, sampling):
    """Known scores: least confidence = each image's mean pixel, so the ranking is fixed by the images."""
    from workers.ml.al.scoring import PoolScores

    n = len(images)
    conf = np.array([float(np.mean(im)) for im in images])
    probs = np.stack([1 - conf / 10, conf / 10], axis=1)
    zeros = np.zeros(n)
    return PoolScores(
        entropy=zeros,
        bald=zeros,
        variance=zeros,
        least_confidence=conf,
        margin=zeros,
        mean_probs=probs,
        foreground_fraction=zeros,
        embeddings=np.zeros((n, 4)),
        uncertainty_maps=[],
    )


def test_a_pool_is_scored_one_chunk_per_task_with_progress_and_the_same_ranking(
    project, pool, monkeypatch, member, client_for, settings
):
    TrainingSettingsFactory(project=project, query_strategy="least_confidence")
    monkeypatch.setattr(backends, "score_pool", _pixel_mean_scores)  # deterministic scores
    version = make_version(project, number=1, state=VersionState.ACTIVE)
    scoring_run(project_id=project.pk, version_id=version.pk)  # in one chunk: the reference ranking
    whole = list(
        CaseScore.objects.filter(model_version=version).order_by("rank").values_list("case_id", flat=True)
    )
    settings.HITL_SCORING_CHUNK_CASES = 3  # 8 cases: chunks of 3, 3 and 2
    before = len(_scoring_messages())
    assert scoring_run(project_id=project.pk, version_id=version.pk) == 3
    version.refresh_from_db()
    run = version.scoring["run"]
    assert version.scoring["next"] == 1 and version.scoring["done"] == 3 and version.scoring["total"] == 8
    assert not version.scoring["finished_at"]
    listed = client_for(member(Role.ANNOTATOR)).get(f"/api/v1/projects/{project.pk}/model-versions").json()
    progress = listed["results"][0]["scoring"]
    assert (progress["done"], progress["total"], progress["finished_at"], progress["stopped"]) == (
        3,
        8,
        None,
        False,
    )
    sent = _scoring_messages()[before:]
    assert [m.kwargs for m in sent] == [
        {"project_id": project.pk, "version_id": version.pk, "run": run, "chunk": 1}
    ]
    assert scoring_run(**sent[0].kwargs) == 3
    assert scoring_run(**sent[0].kwargs) == 0  # a redelivered chunk does nothing, and sends nothing
    sent = _scoring_messages()[before:]
    assert len(sent) == 2 and sent[1].kwargs["chunk"] == 2
    assert _files_under(f"projects/{project.pk}/scoring") != []  # two chunks stored so far
    assert scoring_run(**sent[1].kwargs) == 2  # the last chunk ranks the pool
    version.refresh_from_db()
    assert (
        version.scoring["done"] == 8 and version.scoring["finished_at"] and version.scoring["case_ids"] == []
    )
    chunked = list(
        CaseScore.objects.filter(model_version=version).order_by("rank").values_list("case_id", flat=True)
    )
    assert chunked == whole and _files_under(f"projects/{project.pk}/scoring") == []
    assert len(set(whole)) == 8 and whole != sorted(whole)  # a real ranking across the chunks


def test_a_scoring_superseded_or_of_a_retired_version_stops_and_drops_its_chunks(project, pool, settings):
    version = make_version(project, number=1, state=VersionState.ACTIVE)
    settings.HITL_SCORING_CHUNK_CASES = 3
    scoring_run(project_id=project.pk, version_id=version.pk)
    first = _scoring_messages()[-1].kwargs
    scoring_run(project_id=project.pk, version_id=version.pk)  # a newer scoring of the same version
    assert scoring_run(**first) == 0  # the first run's next chunk stops
    second = _scoring_messages()[-1].kwargs
    assert second["run"] != first["run"]
    assert len(_files_under(f"projects/{project.pk}/scoring")) == 1  # only the second run's chunk 0
    version.state = VersionState.RETIRED
    version.save(update_fields=["state"])
    assert scoring_run(**second) == 0  # rolled back or promoted past: stops, its chunks deleted
    version.refresh_from_db()
    assert version.scoring["stopped"] and _files_under(f"projects/{project.pk}/scoring") == []
    assert not CaseScore.objects.filter(model_version=version).exists()
