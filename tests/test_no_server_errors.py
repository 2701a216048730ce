"""Bad input to every API endpoint gets a 4xx with the uniform error body, never a 500.

Walks the URL conf, fills path ids with real objects (and with ids that do not exist), and sends each route
junk bodies and query strings as a member with every role."""

import pytest
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.test import APIClient

from annotations.models import Role
from tests.annotations.conftest import pool  # noqa: F401  (fixture)
from tests.factories import MembershipFactory, UserFactory

JUNK_BODIES = [
    {},
    {"x": 1},
    "not json at all",
    {"mask": "x", "base_revision": "abc", "time_spent_s": -5, "config": "x", "formats": 7},
    {"mask": {"format": "rle", "size": [100000, 100000], "values": [0], "lengths": [10000000000]}},
    {"mask": {"format": "png_base64", "data": "!!!not-base64"}},
    {"config": {"epochs": "many", "channels": [3], "patch_size": -1}},
    {"formats": ["nifti", "bogus"], "labels": "nope", "date_from": "yesterday", "splits": [5]},
    {"readers_per_case": 0, "query_strategy": "psychic", "training_config": {"nope": 1}, "label_policy": 3},
    {"username": ["a"], "role": "king", "reason": {"a": 1}},
]
JUNK_QUERY = "?limit=abc&page=zz&split=%00&image=-1&kind=bogus&page_size=-3"


def _routes():
    out = []

    def walk(patterns, prefix=""):
        for p in patterns:
            if isinstance(p, URLResolver):
                walk(p.url_patterns, prefix + str(p.pattern))
            elif isinstance(p, URLPattern):
                out.append(prefix + str(p.pattern))

    walk(get_resolver().url_patterns)
    return [r for r in out if r.startswith("api/v1/")]


def _fill(route: str, ids: dict[str, int]) -> str:
    for name, value in ids.items():
        route = route.replace(f"<int:{name}>", str(value))
    return "/" + route


@pytest.mark.django_db
@pytest.mark.parametrize("role", [Role.ANNOTATOR, Role.ML_ENGINEER, Role.DATA_MANAGER, Role.ADMIN])
def test_junk_never_gives_a_server_error(project, pool, role):  # noqa: F811
    user = UserFactory(username=f"fuzz-{role}")
    MembershipFactory(project=project, user=user, role=role)
    client = APIClient(raise_request_exception=False)  # a crash must show up as the 500 it would be
    client.force_authenticate(user)
    real = {"project_id": project.pk, "case_id": pool[0].pk}
    missing = dict.fromkeys(
        [
            "project_id",
            "case_id",
            "run_id",
            "version_id",
            "membership_id",
            "annotation_id",
            "explanation_id",
            "export_id",
            "report_id",
        ],
        999999,
    )
    routes = _routes()
    assert len(routes) > 25, routes
    failures = []
    for route in routes:
        for ids in ({**missing, **real}, missing):
            path = _fill(route, ids)
            if "<" in path:
                continue
            for method in ("get", "post", "patch", "delete"):
                bodies = JUNK_BODIES if method in ("post", "patch") else [None]
                for body in bodies:
                    kwargs = {"format": "json"} if isinstance(body, dict) else {"content_type": "text/plain"}
                    resp = getattr(client, method)(path + JUNK_QUERY, body, **kwargs)
                    if resp.status_code >= 500:
                        failures.append((method, path, body, resp.status_code))
                    elif resp.status_code >= 400 and resp.get("Content-Type", "").startswith(
                        "application/json"
                    ):
                        assert "error" in resp.json(), (method, path, resp.content[:200])
    assert not failures, failures[:10]
