from datetime import timedelta

import pytest
from django.utils import timezone

from annotations.models import Role
from tests.factories import UserFactory
from tests.workers.test_training_helpers import TINY, make_version
from workers.models import RunStatus, TrainingRun, VersionState


@pytest.fixture
def world(project):
    """A queued run, an active v2 with a retired v1 before it, and a candidate v3."""
    t0 = timezone.now() - timedelta(hours=1)
    v1 = make_version(project, number=1, state=VersionState.RETIRED, promoted_at=t0)
    v2 = make_version(project, number=2, state=VersionState.ACTIVE, parent=v1)
    v3 = make_version(project, number=3)
    run = TrainingRun.objects.create(project=project, config={"train": {}}, seed=1)
    return {"run": run, "v1": v1, "v2": v2, "v3": v3}


def _requests(project, world):
    pid, run, v3 = project.pk, world["run"].pk, world["v3"].pk
    reads = [
        ("get", f"/api/v1/projects/{pid}/training-runs", None),
        ("get", f"/api/v1/training-runs/{run}", None),
        ("get", f"/api/v1/projects/{pid}/model-versions", None),
        ("get", f"/api/v1/projects/{pid}/learning-curve", None),
    ]
    writes = [
        ("post", f"/api/v1/training-runs/{run}/cancel", None),
        ("post", f"/api/v1/model-versions/{v3}/promote", None),
        ("post", f"/api/v1/projects/{pid}/model-versions/rollback", None),
    ]
    return reads, writes


@pytest.mark.parametrize(
    "role, read, write",
    [
        (Role.ANNOTATOR, 200, 403),
        (Role.DATA_MANAGER, 200, 403),
        (Role.ML_ENGINEER, 200, 200),
        (Role.ADMIN, 200, 200),
        (None, 404, 404),
    ],
)
def test_permission_matrix(project, world, member, client_for, other_project, role, read, write):
    if role is None:
        user = UserFactory()
        other_project.memberships.create(user=user, role=Role.ADMIN)  # admin elsewhere is no one here
    else:
        user = member(role)
    client = client_for(user)
    reads, writes = _requests(project, world)
    for method, url, body in reads:
        assert getattr(client, method)(url, body, format="json").status_code == read, url
    for method, url, body in writes:
        assert getattr(client, method)(url, body, format="json").status_code == write, url


@pytest.mark.parametrize(
    "role, expected", [(Role.ANNOTATOR, 403), (Role.ML_ENGINEER, 201), (Role.ADMIN, 201)]
)
def test_start_permissions(project, member, client_for, role, expected):
    resp = client_for(member(role)).post(
        f"/api/v1/projects/{project.pk}/training-runs", {"config": TINY}, format="json"
    )
    assert resp.status_code == expected, resp.json()


def test_start_then_409_while_one_is_open_and_400_for_a_bad_config(project, member, client_for):
    client = client_for(member(Role.ML_ENGINEER))
    url = f"/api/v1/projects/{project.pk}/training-runs"
    assert client.post(url, {"config": {"epochs": 0}}, format="json").status_code == 400
    assert client.post(url, {"config": {"bogus": 1}}, format="json").json()["error"]["code"] == "invalid"
    first = client.post(url, {"config": TINY}, format="json")
    assert first.status_code == 201 and first.json()["status"] == "queued"
    assert first.json()["config"]["network"]["channels"] == [4, 8, 16] and first.json()["seed"] == 0
    second = client.post(url, {}, format="json")
    assert second.status_code == 409 and second.json()["error"]["code"] == "run_open"


def test_run_detail_shows_progress(project, member, client_for, world):
    run = world["run"]
    epochs = [{"epoch": 1, "train_loss": 0.9, "val_dice": 0.4, "seconds": 1.5, "eta_seconds": 3.0}]
    TrainingRun.objects.filter(pk=run.pk).update(
        status=RunStatus.RUNNING, progress=33.3, epochs=epochs, heartbeat_at=timezone.now(), attempts=1
    )
    body = client_for(member(Role.ANNOTATOR)).get(f"/api/v1/training-runs/{run.pk}").json()
    assert body["status"] == "running" and body["progress"] == 33.3 and body["epochs"] == epochs
    assert body["eta_seconds"] == 3.0 and body["heartbeat_at"] and body["result_version"] is None
    assert body["outcome"] == "" and body["attempts"] == 1


def test_cancel_twice_is_409(project, member, client_for, world):
    client = client_for(member(Role.ML_ENGINEER))
    url = f"/api/v1/training-runs/{world['run'].pk}/cancel"
    assert client.post(url).json()["status"] == "cancelled"
    resp = client.post(url)
    assert resp.status_code == 409 and resp.json()["error"]["code"] == "run_finished"


def test_versions_promote_rollback_and_learning_curve(project, member, client_for, world):
    client = client_for(member(Role.ADMIN))
    listing = client.get(f"/api/v1/projects/{project.pk}/model-versions").json()["results"]
    assert [(v["number"], v["state"]) for v in listing] == [(3, "candidate"), (2, "active"), (1, "retired")]
    assert listing[1]["parent_number"] == 1 and listing[1]["metrics"]["validation_dice"] == 0.5
    before = client.get(f"/api/v1/projects/{project.pk}/learning-curve").json()["points"]
    resp = client.post(f"/api/v1/model-versions/{world['v3'].pk}/promote")
    assert resp.status_code == 200 and resp.json()["state"] == "active"
    assert client.post(f"/api/v1/model-versions/{world['v3'].pk}/promote").status_code == 409
    resp = client.post(f"/api/v1/projects/{project.pk}/model-versions/rollback")
    assert resp.json()["number"] == 2 and resp.json()["state"] == "active"
    assert [p["promoted"] for p in before] == [True, True, False]  # v3: a candidate, never active
    curve = client.get(f"/api/v1/projects/{project.pk}/learning-curve").json()["points"]
    assert [p["number"] for p in curve] == [1, 2, 3]
    assert curve[2]["promoted"] is True  # v3 was active for a while: readers were given its proposals
    assert [p["labelled_cases"] for p in curve] == [4, 8, 12] and curve[0]["test_dice"] == pytest.approx(0.45)


def test_unknown_run_and_version_are_404(project, member, client_for):
    client = client_for(member(Role.ADMIN))
    assert client.get("/api/v1/training-runs/999999").status_code == 404
    assert client.post("/api/v1/model-versions/999999/promote").status_code == 404
