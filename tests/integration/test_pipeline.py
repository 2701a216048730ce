"""The whole loop on real services: API -> Redis -> a real worker trains -> version active -> scores, queue
order, proposals and explanations appear."""

import pytest
from rest_framework.test import APIClient

from annotations.models import Case, Role
from tests.factories import MembershipFactory, TrainingSettingsFactory, UserFactory
from tests.integration.conftest import wait_until
from tests.workers.test_training_helpers import TINY, seed_project
from workers.models import CaseScore, Explanation, Prediction, RunStatus, TrainingRun, VersionState
from workers.selectors.registry import case_ml_payload

pytestmark = pytest.mark.django_db(transaction=True)


def test_training_run_through_the_api_ends_in_a_scored_explained_queue(celery_worker):
    project = TrainingSettingsFactory(query_strategy="bald").project
    ml = UserFactory()
    MembershipFactory(project=project, user=ml, role=Role.ML_ENGINEER)
    cases = seed_project(project, ml, n_pool=5)
    pool_ids = {c.pk for c in cases["pool"]}
    client = APIClient()
    client.force_authenticate(ml)

    resp = client.post(f"/api/v1/projects/{project.pk}/training-runs", {"config": TINY}, format="json")
    assert resp.status_code == 201 and resp.json()["status"] == "queued"  # not eager: the worker trains
    run_id = resp.json()["id"]
    done = (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED)
    run = wait_until(lambda: TrainingRun.objects.filter(pk=run_id, status__in=done).first(), timeout=60)
    assert run.status == RunStatus.SUCCEEDED, run.outcome

    body = client.get(f"/api/v1/training-runs/{run_id}").json()
    assert body["progress"] == 100 and len(body["epochs"]) == 2 and body["result_version_number"] == 1
    version = run.result_version
    assert version.state == VersionState.ACTIVE

    wait_until(lambda: CaseScore.objects.filter(model_version=version).count() == len(pool_ids), timeout=30)
    ranked = list(
        CaseScore.objects.filter(model_version=version).order_by("rank").values_list("case_id", flat=True)
    )
    queue = list(Case.objects.filter(project=project, split="pool").order_by("-priority", "id"))
    assert [c.pk for c in queue] == ranked and queue[0].queue_reason["model_version_id"] == version.pk

    proposed = {*pool_ids, *(c.pk for c in cases["test"])}  # the test cases get proposals too, after the pool
    wait_until(lambda: Prediction.objects.filter(model_version=version).count() == len(proposed), timeout=30)
    assert set(Prediction.objects.filter(model_version=version).values_list("case_id", flat=True)) == proposed
    wait_until(
        lambda: Explanation.objects.filter(model_version=version).count() == 2 * len(pool_ids), timeout=30
    )
    payload = case_ml_payload(queue[0])
    assert payload["model_version"]["id"] == version.pk and payload["proposal"]["stale"] is False
    assert {e["method"] for e in payload["explanations"]} == {"gradcam", "saliency"}
