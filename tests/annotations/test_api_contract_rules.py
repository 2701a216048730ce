"""The rules that keep the OpenAPI schema true, checked without a server (the schemathesis run against a
real one is tests/integration/test_api_contract.py): strict JSON types, strict pagination and query
parameters, and a schema that documents envelopes and error statuses."""

import pytest
from drf_spectacular.generators import SchemaGenerator

from annotations.models import Role

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def schema():
    return SchemaGenerator().get_schema(request=None, public=True)


@pytest.mark.parametrize(
    "query, status",
    [("page=0", 400), ("page=abc", 400), ("page_size=501", 400), ("page=1&page=2", 400), ("page=99", 404)],
)
def test_pagination_refuses_what_it_cannot_honour(project, member, client_for, query, status):
    client = client_for(member(Role.ADMIN))
    resp = client.get(f"/api/v1/projects/{project.pk}/members?{query}")
    assert resp.status_code == status, resp.content
    assert client.get(f"/api/v1/projects/{project.pk}/members?page=1&page_size=500").status_code == 200


@pytest.mark.parametrize("query", ["split=", "split=bogus", "image=0", "image=x"])
def test_query_filters_are_validated(project, member, client_for, query):
    resp = client_for(member(Role.ADMIN)).get(f"/api/v1/projects/{project.pk}/cases?{query}")
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid"


@pytest.mark.parametrize(
    "path, body",
    [
        ("/training-settings", {"gating_tolerance": False}),
        ("", {"readers_per_case": "2"}),
        ("", {"name": 7}),
        ("/training-settings", {"auto_retrain_every": 1.5}),
    ],
)
def test_json_types_are_not_coerced(project, member, client_for, path, body):
    url = f"/api/v1/projects/{project.pk}{path}"
    resp = client_for(member(Role.ADMIN)).patch(url, body, format="json")
    assert resp.status_code == 400, (body, resp.content)


def test_forms_are_not_accepted_where_json_is_expected(project, member, client_for):
    resp = client_for(member(Role.ADMIN)).patch(
        f"/api/v1/projects/{project.pk}", {"name": "x"}, format="multipart"
    )
    assert resp.status_code == 415


def test_every_list_documents_its_envelope_and_every_operation_its_errors(schema):
    for path, operations in schema["paths"].items():
        for method, op in operations.items():
            codes = set(op["responses"])
            public = op["operationId"] == "auth_token"
            assert public or {"401", "403"} <= codes, (method, path, codes)
            if "{" in path:
                assert "404" in codes, (method, path)
            if method in ("post", "patch") and "requestBody" in op:
                assert {"400", "415"} <= codes, (method, path)
            ok = op["responses"].get("200", {}).get("content", {}).get("application/json", {})
            ref = ok.get("schema", {}).get("$ref", "")
            if ref.startswith("#/components/schemas/Paginated"):
                body = schema["components"]["schemas"][ref.rsplit("/", 1)[1]]
                assert {"count", "next", "previous", "results"} <= set(body["properties"])
                assert "404" in codes  # a page past the end
    listed = [p for p, ops in schema["paths"].items() if "get" in ops and p.endswith(("/members", "/cases"))]
    assert listed and all(
        schema["paths"][p]["get"]["responses"]["200"]["content"]["application/json"]["schema"][
            "$ref"
        ].startswith("#/components/schemas/Paginated")
        for p in listed
    )
