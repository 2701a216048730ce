"""The defaults a new user runs with leak nothing: DEBUG off in the run command's settings, the project's
own 404 and 500 (no URL list, no request body), schema and docs for signed-in users only."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import Client
from django.urls import path

from hitl.urls import urlpatterns as real_patterns

ROOT = Path(__file__).resolve().parent.parent


def _boom(request):
    raise RuntimeError(f"failed on {request.body[:200]!r}")  # what a careless view might do with an upload


urlpatterns = [path("boom/", _boom), path("api/v1/boom", _boom), *real_patterns]
handler404 = "annotations.pages.not_found"
handler500 = "annotations.pages.server_error"


def _debug_for(**env: str) -> str:
    full = {k: v for k, v in os.environ.items() if k not in ("DEBUG", "HITL_DEBUG")}
    full.update(DJANGO_SETTINGS_MODULE="hitl.settings.local", **env)
    code = "import django; django.setup(); from django.conf import settings; print(settings.DEBUG)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=full, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip()


def test_the_run_commands_settings_serve_with_debug_off_unless_asked():
    assert _debug_for() == "False"
    assert _debug_for(HITL_DEBUG="1") == "True"


@pytest.mark.django_db
def test_404_is_our_own_page_and_lists_no_urls(client, settings):
    settings.DEBUG = False
    page = client.get("/no/such/page/")
    assert page.status_code == 404 and b"Not found" in page.content
    assert b"api/v1" not in page.content and b"urlpatterns" not in page.content.lower()
    api = client.get("/api/v1/no/such/thing")
    assert api.status_code == 404 and api.json()["error"]["code"] == "not_found"


@pytest.mark.django_db
@pytest.mark.urls("tests.test_defaults_do_not_leak")
@pytest.mark.parametrize("url", ["/boom/", "/api/v1/boom"])
def test_500_echoes_nothing_of_the_request(settings, url):
    settings.DEBUG = False
    client = Client(raise_request_exception=False)
    resp = client.post(url, data=b"PatientName=DOE^JOHN MRN123456", content_type="text/plain")
    assert resp.status_code == 500
    assert b"DOE" not in resp.content and b"MRN123456" not in resp.content
    if url.startswith("/api/"):
        assert resp.json()["error"]["code"] == "server_error"
    else:
        assert b"Something went wrong" in resp.content


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["/api/schema/", "/api/docs/", "/api/redoc/"])
def test_schema_and_docs_need_a_signed_in_user(client, admin_client, url):
    assert client.get(url).status_code in (401, 403)
    assert admin_client.get(url).status_code == 200
