"""The active-learning loop end to end, every step through the API, on PostgreSQL + Redis + a real worker:
seed labels -> first model -> queue ordered by uncertainty -> readers submit corrections through the queue
-> automatic retrain -> new active version -> queue order and proposals change."""

import base64

import pytest
from rest_framework.test import APIClient

from annotations.models import Role
from tests.factories import MembershipFactory, TrainingSettingsFactory, UserFactory
from tests.helpers import png_bytes
from tests.integration.conftest import wait_until
from tests.workers.test_training_helpers import TINY, pool_masks, seed_project

pytestmark = pytest.mark.django_db(transaction=True)
N_TRAIN, N_VAL, N_TEST, N_POOL, EVERY = 4, 2, 2, 8, 3


def _client(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def _active_version(ml, project_id):
    versions = ml.get(f"/api/v1/projects/{project_id}/model-versions").json()["results"]
    return next((v for v in versions if v["state"] == "active"), None)


def _queue_scored_by(ml, project_id, number):
    head = ml.get(f"/api/v1/projects/{project_id}/queue?limit=50").json()
    return head if head and all(c["queue_reason"].get("model_version") == number for c in head) else None


def test_the_loop_improves_itself_without_a_terminal(celery_worker):
    project = TrainingSettingsFactory(
        query_strategy="entropy", auto_retrain_every=EVERY, gating_tolerance=1.0, training_config=TINY
    ).project
    ml_user, reader = UserFactory(username="ml"), UserFactory(username="reader")
    MembershipFactory(project=project, user=ml_user, role=Role.ML_ENGINEER)
    MembershipFactory(project=project, user=reader, role=Role.ANNOTATOR)
    seed_project(project, ml_user, n_train=N_TRAIN, n_val=N_VAL, n_test=N_TEST, n_pool=N_POOL)
    truth = pool_masks(N_POOL, offset=N_TRAIN + N_VAL + N_TEST)
    ml, rc = _client(ml_user), _client(reader)

    # 1. first model from the seed labels
    run = ml.post(f"/api/v1/projects/{project.pk}/training-runs", {}, format="json").json()
    wait_until(
        lambda: ml.get(f"/api/v1/training-runs/{run['id']}").json()["status"] == "succeeded", timeout=90
    )
    assert _active_version(ml, project.pk)["number"] == 1

    # 2. the queue is ordered by the model's uncertainty
    head1 = wait_until(lambda: _queue_scored_by(ml, project.pk, 1), timeout=60)
    assert [c["queue_reason"]["rank"] for c in head1] == sorted(c["queue_reason"]["rank"] for c in head1)
    assert head1[0]["queue_reason"]["strategy"] == "entropy"

    # 3. a reader works through the head of the queue, correcting the proposals
    for i in range(EVERY):
        claim = rc.post(f"/api/v1/projects/{project.pk}/queue/claim").json()
        assert claim["case"] == head1[i]["id"]  # highest priority first
        payload = wait_until(lambda c=claim: _with_proposal(rc, c["case"]), timeout=60)
        case_pos = [c.pk for c in project.cases.filter(split="pool").order_by("id")].index(claim["case"])
        body = {
            "mask": {"format": "png_base64", "data": base64.b64encode(png_bytes(truth[case_pos])).decode()},
            "base_revision": payload["head_revision"],
            "time_spent_s": 20.0 + i,
            "proposal_model_version": payload["proposal"]["model_version_id"],
        }
        resp = rc.post(f"/api/v1/cases/{claim['case']}/annotations", body, format="json")
        assert resp.status_code == 201, resp.content
        assert resp.json()["effort_dice"] is not None and resp.json()["pixels_changed"] is not None

    # 4. the third submission triggers retraining by itself; the new version becomes active
    wait_until(lambda: (_active_version(ml, project.pk) or {}).get("number") == 2, timeout=120)
    runs = ml.get(f"/api/v1/projects/{project.pk}/training-runs").json()["results"]
    assert {r["trigger"] for r in runs} == {"manual", "auto"}

    # 5. the queue is re-scored by v2 and new proposals appear for what readers open next
    head2 = wait_until(lambda: _queue_scored_by(ml, project.pk, 2), timeout=60)
    assert {c["id"] for c in head2}.isdisjoint({c["id"] for c in head1[:EVERY]})  # labelled cases left
    claim = rc.post(f"/api/v1/projects/{project.pk}/queue/claim").json()
    assert claim["case"] == head2[0]["id"]
    payload = wait_until(lambda: _with_proposal(rc, claim["case"], version=2), timeout=60)
    assert payload["model_version"]["number"] == 2


def _with_proposal(client, case_id, version=None):
    payload = client.get(f"/api/v1/cases/{case_id}/editor").json()
    proposal = payload.get("proposal")
    if not proposal or proposal["stale"] or (version and proposal["model_version"] != version):
        return None
    return payload
