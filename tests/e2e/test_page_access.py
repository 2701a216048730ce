"""Who may open the workspace pages (no browser needed): 404 for non-members, 403 for the wrong role."""

import pytest

from annotations.models import Role
from tests.factories import UserFactory


@pytest.mark.django_db
@pytest.mark.parametrize(
    "role, editor, ml, data",
    [
        (Role.ANNOTATOR, 200, 200, 200),
        (Role.ML_ENGINEER, 403, 200, 200),
        (Role.DATA_MANAGER, 403, 200, 200),
        (None, 404, 404, 404),
    ],
)
def test_page_access(client, project, member, role, editor, ml, data):
    user = member(role) if role else UserFactory()
    client.force_login(user)
    pid = project.pk
    assert client.get(f"/projects/{pid}/annotate/").status_code == editor
    assert client.get(f"/projects/{pid}/ml/").status_code == ml
    assert client.get(f"/projects/{pid}/data/").status_code == data


@pytest.mark.django_db
def test_pages_need_login_and_the_project_page_links_them(client, project, member):
    assert client.get(f"/projects/{project.pk}/annotate/").status_code == 302
    client.force_login(member(Role.ANNOTATOR))
    html = client.get(f"/projects/{project.pk}/").content.decode()
    assert "Start annotating" in html and f"/projects/{project.pk}/ml/" in html
