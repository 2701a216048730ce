import pytest

from tests.helpers import png_upload, upload_images


@pytest.mark.django_db
def test_root_serves_a_login_page(client):
    resp = client.get("/")
    assert resp.status_code == 200
    html = resp.content.decode()
    assert '<form method="post"' in html and 'name="password"' in html and "Sign in" in html


@pytest.mark.django_db
def test_login_then_project_page_lists_images_with_thumbnails(client, project, data_manager, dm_client):
    upload_images(dm_client, project, {"file": png_upload(name="DOE_JOHN_MRN123456_19650412.png")})
    resp = client.post("/", {"username": data_manager.username, "password": "pw"})
    assert resp.status_code == 302
    home = client.get("/").content.decode()
    assert project.name in home
    page = client.get(f"/projects/{project.pk}/").content.decode()
    assert "image-0001" in page and "thumbnail.png" in page
    assert "DOE" not in page and "123456" not in page  # the file name names nothing
    case = project.cases.get()
    thumb = client.get(f"/api/v1/cases/{case.pk}/thumbnail.png")
    assert (
        thumb.status_code == 200 and thumb["Content-Type"] == "image/png" and thumb.content[:4] == b"\x89PNG"
    )


@pytest.mark.django_db
def test_project_page_404_for_outsider(client, project, other_project):
    from tests.factories import MembershipFactory, UserFactory

    outsider = UserFactory(username="out")
    MembershipFactory(project=other_project, user=outsider)
    client.force_login(outsider)
    assert client.get(f"/projects/{project.pk}/").status_code == 404


def test_openapi_schema_generates_without_warnings():
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "manage.py", "spectacular", "--fail-on-warn", "--file", "/dev/null"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        env={**__import__("os").environ, "DJANGO_SETTINGS_MODULE": "hitl.settings.test"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
