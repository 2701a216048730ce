"""A database that went away mid-request (a restart, a failover) answers 503 with Retry-After, never 500:
the API with its JSON error body, pages in plain text."""

import pytest
from django.db import InterfaceError, OperationalError
from django.test import Client

from annotations.models import Role


@pytest.mark.django_db
@pytest.mark.parametrize("error", [OperationalError, InterfaceError])
def test_a_lost_database_is_a_503_with_retry_after(project, member, client_for, monkeypatch, error):
    def down(**kwargs):
        raise error("server closed the connection unexpectedly")

    user = member(Role.ANNOTATOR)
    client = client_for(user)
    monkeypatch.setattr("annotations.apis.projects.project_list_for_user", down)
    resp = client.get("/api/v1/projects")
    assert resp.status_code == 503 and resp["Retry-After"] == "5"
    assert resp.json()["error"]["code"] == "unavailable"
    monkeypatch.setattr("annotations.pages.project_list_for_user", down)
    browser = Client()
    browser.force_login(user)
    page = browser.get("/")
    assert page.status_code == 503 and page["Retry-After"] == "5" and b"retry" in page.content
