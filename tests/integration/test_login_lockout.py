"""The login lockout is shared by every process: failures counted in one process lock the account (or the
address) in another, because axes keeps its counts in the database (PostgreSQL here)."""

import http.cookiejar
import json
import os
import urllib.error
import urllib.parse
import urllib.request

import pytest
from django.conf import settings
from django.test import Client

from hitl.core.models import AuditEvent
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db(transaction=True)
LIMIT = settings.AXES_FAILURE_LIMIT


def _open(opener, url: str, data: bytes | None = None, headers: dict | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=data, headers=headers or {}, method="POST" if data else "GET")
    try:
        with opener.open(req, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def _token_login(server_url: str, username: str, password: str) -> tuple[int, dict]:
    body = json.dumps({"username": username, "password": password}).encode()
    status, raw = _open(
        urllib.request.build_opener(),
        f"{server_url}/api/v1/auth/token",
        body,
        {"Content-Type": "application/json"},
    )
    return status, json.loads(raw)


def _form_login(server_url: str, username: str, password: str) -> tuple[int, str]:
    """The login page as a browser uses it: GET for the CSRF cookie, POST the form; redirects not followed."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), NoRedirect)
    _open(opener, f"{server_url}/")
    csrf = next(c.value for c in jar if c.name == settings.CSRF_COOKIE_NAME)
    form = urllib.parse.urlencode({"username": username, "password": password, "csrfmiddlewaretoken": csrf})
    status, raw = _open(
        opener,
        f"{server_url}/",
        form.encode(),
        {"Content-Type": "application/x-www-form-urlencoded", "Referer": f"{server_url}/"},
    )
    return status, raw.decode()


def test_a_user_locked_in_this_process_is_refused_by_another_server_process(web_server):
    assert web_server.pid != os.getpid()
    UserFactory(username="alice")
    UserFactory(username="bob")
    assert _token_login(web_server.url, "alice", "pw")[0] == 200  # the server logs her in before

    # LIMIT wrong passwords through this process (the Django test client), each from another address, so
    # only the username reaches the limit
    client = Client()
    for i in range(LIMIT):
        client.post(
            "/api/v1/auth/token",
            {"username": "alice", "password": "wrong"},
            content_type="application/json",
            REMOTE_ADDR=f"10.0.0.{i + 1}",
        )

    status, body = _token_login(web_server.url, "alice", "pw")
    assert status == 429 and body["error"]["code"] == "locked_out", body
    status, html = _form_login(web_server.url, "alice", "pw")
    assert status == 429 and "Too many failed sign-ins" in html
    # the server's address (127.0.0.1) has no failures: another user still signs in there
    assert _token_login(web_server.url, "bob", "pw")[0] == 200
    assert _form_login(web_server.url, "bob", "pw")[0] == 302
    # and the server process audited what it refused
    assert AuditEvent.objects.filter(action="auth.login_failed", details__locked_out=True).count() >= 2


def test_an_address_locked_through_the_server_is_refused_in_this_process(web_server):
    UserFactory(username="carol")
    for i in range(LIMIT):  # password spraying through the server, all from 127.0.0.1
        _token_login(web_server.url, f"ghost{i}", "guess")
    resp = Client().post(
        "/api/v1/auth/token", {"username": "carol", "password": "pw"}, content_type="application/json"
    )
    assert resp.status_code == 429 and resp.json()["error"]["code"] == "locked_out"
    ok = Client().post(
        "/api/v1/auth/token",
        {"username": "carol", "password": "pw"},
        content_type="application/json",
        REMOTE_ADDR="10.5.5.5",
    )
    assert ok.status_code == 200
