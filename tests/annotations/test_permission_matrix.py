"""Every role x every endpoint: 2xx where the role may act, 403 where it may not, 404 for outsiders
(so other projects' existence never leaks), 401 without credentials."""

import pytest
from rest_framework.test import APIClient

from annotations.models import Role
from tests.factories import MembershipFactory, UserFactory
from tests.helpers import png_upload, upload_images

ROLES = ["annotator", "ml_engineer", "data_manager", "admin", "outsider"]


def _status_for(allowed: set[str], ok: int):
    return {r: (ok if r in allowed else 404 if r == "outsider" else 403) for r in ROLES}


ALL = {"annotator", "ml_engineer", "data_manager", "admin"}

MATRIX = [
    ("get", "/api/v1/projects/{p}", None, _status_for(ALL, 200)),
    ("patch", "/api/v1/projects/{p}", {"description": "new"}, _status_for({"admin"}, 200)),
    ("patch", "/api/v1/projects/{p}", {"readers_per_case": 2}, _status_for({"data_manager", "admin"}, 200)),
    (
        "patch",
        "/api/v1/projects/{p}",
        {"label_policy": "majority"},
        _status_for({"ml_engineer", "admin"}, 200),
    ),
    ("get", "/api/v1/projects/{p}/members", None, _status_for(ALL, 200)),
    (
        "post",
        "/api/v1/projects/{p}/members",
        {"username": "newbie", "role": "annotator"},
        _status_for({"admin"}, 201),
    ),
    ("get", "/api/v1/projects/{p}/images", None, _status_for(ALL, 200)),
    ("upload", "/api/v1/projects/{p}/images", None, _status_for({"data_manager", "admin"}, 202)),
    ("get", "/api/v1/projects/{p}/imports", None, _status_for({"data_manager", "admin"}, 200)),
    ("get", "/api/v1/projects/{p}/cases", None, _status_for(ALL, 200)),
    # an annotator reads blind: a case the queue did not give them does not exist for them
    ("get", "/api/v1/cases/{c}", None, {**_status_for(ALL - {"annotator"}, 200), "annotator": 404}),
    (
        "get",
        "/api/v1/cases/{c}/thumbnail.png",
        None,
        {**_status_for(ALL - {"annotator"}, 200), "annotator": 404},
    ),
    ("get", "/api/v1/projects/{p}/audit", None, _status_for({"admin"}, 200)),
    ("get", "/api/v1/projects/{p}/explanation-reports", None, _status_for(ALL, 200)),
    # no active model in this world: the roles that may start one get past the permission check to a 409
    ("post", "/api/v1/projects/{p}/explanation-reports", {}, _status_for({"ml_engineer", "admin"}, 409)),
    # anyone who may open the case may ask for an explanation (409: no model yet); an annotator reads blind,
    # so a case the queue did not give them does not exist for them
    (
        "post",
        "/api/v1/cases/{c}/explanations",
        {"method": "gradcam"},
        {**_status_for(ALL - {"annotator"}, 409), "annotator": 404},
    ),
    # the ML settings (workers.TrainingSettings): every member reads them, ML engineers and admins change them
    ("get", "/api/v1/projects/{p}/training-settings", None, _status_for(ALL, 200)),
    (
        "patch",
        "/api/v1/projects/{p}/training-settings",
        {"query_strategy": "bald"},
        _status_for({"ml_engineer", "admin"}, 200),
    ),
]


@pytest.fixture
def world(project, other_project, dm_client):
    UserFactory(username="newbie")
    users = {}
    for role in ["annotator", "ml_engineer", "data_manager", "admin"]:
        users[role] = UserFactory(username=f"m_{role}")
        MembershipFactory(project=project, user=users[role], role=role)
    users["outsider"] = UserFactory(username="outsider")
    MembershipFactory(project=other_project, user=users["outsider"], role=Role.ADMIN)
    upload_images(dm_client, project, {"file": png_upload(seed=99)})
    case_id = project.cases.get().pk
    return users, {"p": project.pk, "c": case_id}


@pytest.mark.django_db
@pytest.mark.parametrize("method,url,body,expected", MATRIX, ids=[f"{m} {u} {b}" for m, u, b, _ in MATRIX])
def test_permission_matrix(world, method, url, body, expected):
    users, ids = world
    for seed, role in enumerate(ROLES):
        client = APIClient()
        client.force_authenticate(users[role])
        path = url.format(**ids)
        if method == "upload":
            resp = client.post(path, {"file": png_upload(seed=seed)}, format="multipart")
        elif body is None:
            resp = getattr(client, method)(path)
        else:
            resp = getattr(client, method)(path, body, format="json")
        assert resp.status_code == expected[role], (role, resp.status_code, resp.content[:300])
        if resp.status_code in (403, 404):
            assert set(resp.json()["error"]) == {"code", "message", "details"}


@pytest.mark.django_db
@pytest.mark.parametrize("method,url,body,expected", MATRIX[:1] + MATRIX[7:8])
def test_anonymous_gets_401(world, method, url, body, expected):
    _, ids = world
    resp = APIClient().get(url.format(**ids)) if method == "get" else APIClient().post(url.format(**ids), {})
    assert resp.status_code == 401


@pytest.mark.django_db
def test_missing_project_and_foreign_project_look_the_same(world):
    users, ids = world
    client = APIClient()
    client.force_authenticate(users["outsider"])
    foreign = client.get(f"/api/v1/projects/{ids['p']}").json()
    missing = client.get("/api/v1/projects/999999").json()
    assert foreign == missing


@pytest.mark.django_db
def test_only_staff_create_projects(client_for, world):
    users, _ = world
    body = {"name": "new", "label_classes": [{"value": 1, "name": "a", "color": "#123456"}]}
    assert client_for(users["admin"]).post("/api/v1/projects", body, format="json").status_code == 403
    staff = UserFactory(username="staff", is_staff=True)
    resp = client_for(staff).post("/api/v1/projects", body, format="json")
    assert resp.status_code == 201 and resp.json()["roles"] == ["admin"]


@pytest.mark.django_db
def test_project_list_shows_only_member_projects(client_for, world, other_project):
    users, ids = world
    names = [p["id"] for p in client_for(users["annotator"]).get("/api/v1/projects").json()["results"]]
    assert names == [ids["p"]]
