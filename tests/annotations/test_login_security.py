"""Sign-in hardening: lockout per username and per IP on the login page, the admin login and the token API
(django-axes, database-backed), audit of sign-in events and of admin membership edits, expiring hashed API
tokens (knox) with revocation, Argon2 password hashing."""

import json
import re
from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.test import Client
from django.utils import timezone
from knox.models import AuthToken

from annotations.models import Membership, Role
from hitl.core.models import AuditEvent
from tests.factories import MembershipFactory, ProjectFactory, UserFactory

pytestmark = pytest.mark.django_db

ROUTES = ["form", "admin", "api"]
LOGIN_PATH = {"form": "/", "admin": "/admin/login/"}
WRONG = "not-the-password-7f3a"
LIMIT = settings.AXES_FAILURE_LIMIT


def _csrf_client() -> Client:
    return Client(enforce_csrf_checks=True)  # the forms are posted as a browser would, CSRF token included


def attempt(client: Client, route: str, username: str, password: str, ip: str = "127.0.0.1"):
    """One login through `route`; returns the response."""
    if route == "api":
        return client.post(
            "/api/v1/auth/token",
            {"username": username, "password": password},
            content_type="application/json",
            REMOTE_ADDR=ip,
        )
    path = LOGIN_PATH[route]
    page = client.get(path, REMOTE_ADDR=ip)
    assert page.status_code == 200
    token = client.cookies[settings.CSRF_COOKIE_NAME].value
    data = {"username": username, "password": password, "csrfmiddlewaretoken": token}
    if route == "admin":
        data["next"] = "/admin/"
    return client.post(path, data, REMOTE_ADDR=ip)


def succeeded(route: str, resp) -> bool:
    if route == "api":
        return resp.status_code == 200 and bool(resp.json().get("token"))
    return resp.status_code == 302  # LoginView redirects only after logging in


def is_locked(route: str, resp) -> bool:
    if resp.status_code != 429 or resp["Retry-After"] != str(int(settings.AXES_COOLOFF_TIME.total_seconds())):
        return False
    if route == "api":
        return resp.json()["error"]["code"] == "locked_out"
    return "Too many failed sign-ins" in resp.content.decode()


def is_plain_failure(route: str, resp) -> bool:
    return resp.status_code == 401 if route == "api" else resp.status_code == 200


@pytest.fixture
def alice(db):
    return UserFactory(username="alice", is_staff=True)  # staff: the admin login accepts her too


@pytest.fixture
def bob(db):
    return UserFactory(username="bob", is_staff=True)


# --- lockout -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("route", ROUTES)
def test_thirty_wrong_passwords_then_the_right_one_is_refused(route, alice):
    client = _csrf_client()
    answers = [attempt(client, route, "alice", WRONG) for _ in range(30)]
    assert all(is_plain_failure(route, r) for r in answers[: LIMIT - 1])
    assert all(is_locked(route, r) for r in answers[LIMIT - 1 :])  # the limit-th failure locks
    final = attempt(client, route, "alice", "pw")
    assert is_locked(route, final) and not succeeded(route, final)
    assert "_auth_user_id" not in client.session and not AuthToken.objects.exists()


@pytest.mark.parametrize("route", ROUTES)
def test_below_the_limit_the_right_password_still_works(route, alice, bob):
    client = _csrf_client()
    for _ in range(LIMIT - 1):
        assert is_plain_failure(route, attempt(client, route, "alice", WRONG))
    assert succeeded(route, attempt(_csrf_client(), route, "bob", "pw"))  # same IP, another user
    assert succeeded(route, attempt(client, route, "alice", "pw"))


@pytest.mark.parametrize("route", ROUTES)
def test_lock_is_per_username_from_any_address(route, alice, bob):
    # one failure from each of LIMIT addresses: no address reaches the limit, the username does
    for i in range(LIMIT):
        attempt(_csrf_client(), route, "alice", WRONG, ip=f"10.0.0.{i + 1}")
    assert is_locked(route, attempt(_csrf_client(), route, "alice", "pw", ip="10.0.1.1"))
    # another user from an address alice failed from (1 failure there) is not affected
    assert succeeded(route, attempt(_csrf_client(), route, "bob", "pw", ip="10.0.0.1"))


@pytest.mark.parametrize("route", ROUTES)
def test_lock_is_per_ip_for_any_username(route, alice):
    # password spraying: one failure for each of LIMIT usernames, all from one address
    for i in range(LIMIT):
        attempt(_csrf_client(), route, f"ghost{i}", WRONG, ip="10.9.9.9")
    assert is_locked(route, attempt(_csrf_client(), route, "alice", "pw", ip="10.9.9.9"))
    assert succeeded(route, attempt(_csrf_client(), route, "alice", "pw", ip="10.9.9.10"))


@pytest.mark.parametrize("locked_via", ROUTES)
def test_a_lock_made_on_one_route_holds_on_the_others(locked_via, alice):
    for _ in range(LIMIT):
        attempt(_csrf_client(), locked_via, "alice", WRONG)
    for route in ROUTES:
        # from another address too: the username is locked wherever it signs in
        resp = attempt(_csrf_client(), route, "alice", "pw", ip="10.7.7.7")
        assert is_locked(route, resp), (locked_via, route, resp.status_code)


def test_the_lock_ends_after_the_cooloff(alice):
    for _ in range(LIMIT):
        attempt(_csrf_client(), "api", "alice", WRONG)
    assert is_locked("api", attempt(_csrf_client(), "api", "alice", "pw"))
    AccessAttempt.objects.update(
        attempt_time=timezone.now() - settings.AXES_COOLOFF_TIME - timedelta(seconds=1)
    )
    assert succeeded("api", attempt(_csrf_client(), "api", "alice", "pw"))


def test_locked_api_answer_has_the_project_error_shape(alice):
    for _ in range(LIMIT):
        resp = attempt(_csrf_client(), "api", "alice", WRONG)
    body = resp.json()
    assert resp.status_code == 429 and set(body) == {"error"}
    assert body["error"]["code"] == "locked_out" and "Too many failed sign-ins" in body["error"]["message"]
    assert body["error"]["details"] == {
        "failure_limit": LIMIT,
        "cooloff_seconds": int(settings.AXES_COOLOFF_TIME.total_seconds()),
    }


def test_locked_form_shows_the_reason_on_the_sign_in_page(alice):
    client = _csrf_client()
    for _ in range(LIMIT):
        resp = attempt(client, "form", "alice", WRONG)
    html = resp.content.decode()
    assert resp.status_code == 429 and 'role="alert"' in html and "locked for 15 minutes" in html
    assert 'name="password"' in html  # still the sign-in form, for when the lock ends


def test_a_forged_forwarded_for_header_does_not_change_the_address(alice):
    # no proxy configured (HITL_TRUSTED_PROXY_COUNT=0): X-Forwarded-For is the client's to write, so ignored
    for i in range(LIMIT):
        attempt(_csrf_client(), "api", f"ghost{i}", WRONG, ip="10.3.3.3")
    resp = Client().post(
        "/api/v1/auth/token",
        {"username": "alice", "password": "pw"},
        content_type="application/json",
        REMOTE_ADDR="10.3.3.3",
        HTTP_X_FORWARDED_FOR="203.0.113.9",
    )
    assert is_locked("api", resp)


def test_behind_a_proxy_the_client_is_the_address_it_appended(settings):
    from django.test import RequestFactory

    from annotations.auth_guard import client_ip

    settings.HITL_TRUSTED_PROXY_COUNT = 1
    request = RequestFactory().get("/", REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="6.6.6.6, 198.51.100.7")
    assert client_ip(request) == "198.51.100.7"  # "6.6.6.6" was written by the client itself
    assert client_ip(RequestFactory().get("/", REMOTE_ADDR="10.0.0.2")) == "10.0.0.2"  # header missing


def test_failed_attempt_records_hold_no_password(alice):
    for route in ROUTES:
        attempt(_csrf_client(), route, "alice", WRONG)
    dump = json.dumps(list(AccessAttempt.objects.values()), default=str)
    assert WRONG not in dump


# --- audit of sign-in events -----------------------------------------------------------------------------


def _events(action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action).order_by("id"))


@pytest.mark.parametrize("route", ROUTES)
def test_failed_login_is_audited_with_username_never_password(route, alice):
    attempt(_csrf_client(), route, "alice", WRONG, ip="10.1.2.3")
    (event,) = _events("auth.login_failed")
    assert event.actor is None
    assert event.details == {"username": "alice", "route": route, "ip": "10.1.2.3", "locked_out": False}
    everything = json.dumps(list(AuditEvent.objects.values("details", "target_id", "target_type")))
    assert WRONG not in everything


def test_locked_attempts_are_audited_as_such(alice):
    for _ in range(LIMIT + 1):
        attempt(_csrf_client(), "api", "alice", WRONG)
    attempt(_csrf_client(), "api", "alice", "pw")
    flags = [e.details["locked_out"] for e in _events("auth.login_failed")]
    assert flags == [False] * (LIMIT - 1) + [True] * 3  # the right password while locked is a failure too


@pytest.mark.parametrize("route", ["form", "admin"])
def test_session_login_and_logout_are_audited(route, alice):
    client = _csrf_client()
    assert succeeded(route, attempt(client, route, "alice", "pw", ip="10.4.4.4"))
    (login,) = _events("auth.login")
    assert login.actor == alice and login.details == {"route": route, "ip": "10.4.4.4"}
    token = client.cookies[settings.CSRF_COOKIE_NAME].value
    logout_path = "/logout/" if route == "form" else "/admin/logout/"
    assert client.post(logout_path, {"csrfmiddlewaretoken": token}, REMOTE_ADDR="10.4.4.4").status_code in (
        200,
        302,
    )
    (logout,) = _events("auth.logout")
    assert logout.actor == alice and logout.details == {"route": route, "ip": "10.4.4.4"}


def test_token_login_and_revocation_are_audited(alice):
    client = _csrf_client()
    key = attempt(client, "api", "alice", "pw").json()["token"]
    (login,) = _events("auth.login")
    (issue,) = _events("token.issue")
    assert login.actor == alice and login.details["route"] == "api"
    assert (
        issue.actor == alice
        and issue.details["token_key"] == key[:15]
        and key not in json.dumps(issue.details)
    )
    assert client.post("/api/v1/auth/token/revoke", HTTP_AUTHORIZATION=f"Token {key}").status_code == 204
    (revoke,) = _events("token.revoke")
    (logout,) = _events("auth.logout")
    assert revoke.actor == alice and revoke.details == {"token_key": key[:15]}
    assert logout.actor == alice and logout.details["route"] == "api"


# --- tokens ----------------------------------------------------------------------------------------------


def _token(username: str = "alice", ip: str = "127.0.0.1") -> dict:
    resp = attempt(Client(), "api", username, "pw", ip=ip)
    assert resp.status_code == 200, resp.content
    return resp.json()


def _get(key: str):
    return Client().get("/api/v1/projects", HTTP_AUTHORIZATION=f"Token {key}")


def test_token_response_has_key_and_expiry(alice):
    before = timezone.now()
    body = _token()
    assert set(body) == {"token", "expiry"}
    expiry = timezone.datetime.fromisoformat(body["expiry"])
    ttl = settings.REST_KNOX["TOKEN_TTL"]
    assert before + ttl <= expiry <= timezone.now() + ttl
    assert _get(body["token"]).status_code == 200


def test_default_token_lifetime_is_24_hours():
    assert settings.REST_KNOX["TOKEN_TTL"] == timedelta(hours=24)


def test_token_is_stored_as_a_digest_not_in_plain_text(alice):
    key = _token()["token"]
    row = AuthToken.objects.get()
    assert row.digest != key and len(row.digest) == 128 and re.fullmatch(r"[0-9a-f]{128}", row.digest)
    assert key not in json.dumps(list(AuthToken.objects.values()), default=str)
    assert row.token_key == key[:15]  # the lookup prefix only


def test_expired_token_gets_401(alice):
    key = _token()["token"]
    AuthToken.objects.update(expiry=timezone.now() - timedelta(seconds=1))
    resp = _get(key)
    assert resp.status_code == 401 and resp.json()["error"]["code"] == "authentication_failed"


def test_token_authentication_is_one_query(alice, django_assert_num_queries):
    from annotations.apis.authentication import TokenAuthentication

    key = _token()["token"]
    with django_assert_num_queries(1):  # the token with its user; knox's own adds a sweep of all theirs
        user, token = TokenAuthentication().authenticate_credentials(key.encode())
    assert user == alice and token.token_key == key[:15]


def test_expired_tokens_of_the_user_are_deleted_at_the_next_login(alice, bob):
    old = _token()["token"]
    other = _token("bob")["token"]
    AuthToken.objects.update(expiry=timezone.now() - timedelta(seconds=1))
    _token()
    assert AuthToken.objects.filter(user=alice).count() == 1  # only the new one
    assert AuthToken.objects.filter(user=bob).count() == 1  # not alice's to clean
    assert _get(old).status_code == 401 and _get(other).status_code == 401


def test_revoked_token_gets_401_and_other_tokens_keep_working(alice):
    first, second = _token()["token"], _token()["token"]
    assert Client().post("/api/v1/auth/token/revoke", HTTP_AUTHORIZATION=f"Token {first}").status_code == 204
    assert _get(first).status_code == 401
    assert _get(second).status_code == 200


def test_revoke_all_revokes_every_token_of_the_caller_only(alice, bob):
    mine = [_token()["token"] for _ in range(3)]
    theirs = _token("bob")["token"]
    resp = Client().post("/api/v1/auth/token/revoke-all", HTTP_AUTHORIZATION=f"Token {mine[0]}")
    assert resp.status_code == 204
    assert [_get(k).status_code for k in mine] == [401, 401, 401]
    assert _get(theirs).status_code == 200
    assert _events("token.revoke_all")[0].details == {"count": 3}


def test_revoke_without_a_token_is_refused(alice):
    assert Client().post("/api/v1/auth/token/revoke").status_code == 401
    client = Client()
    client.force_login(alice)  # a browser session has no token to revoke
    resp = client.post("/api/v1/auth/token/revoke")
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid"


def test_unauthenticated_api_call_gets_401_with_token_challenge():
    resp = Client().get("/api/v1/projects")
    assert resp.status_code == 401 and resp["WWW-Authenticate"] == "Token"


def test_bad_token_gets_401():
    assert _get("0" * 64).status_code == 401


# --- password hashing ------------------------------------------------------------------------------------


def test_production_hashers_put_argon2_first_and_keep_pbkdf2():
    from hitl.settings import base

    assert base.PASSWORD_HASHERS[0] == "django.contrib.auth.hashers.Argon2PasswordHasher"
    assert "django.contrib.auth.hashers.PBKDF2PasswordHasher" in base.PASSWORD_HASHERS


def test_an_old_hash_is_upgraded_to_argon2_at_the_next_login(settings):
    # MD5 stands in for PBKDF2 (same path through check_password, without its deliberate slowness)
    settings.PASSWORD_HASHERS = [
        "django.contrib.auth.hashers.Argon2PasswordHasher",
        "django.contrib.auth.hashers.MD5PasswordHasher",
    ]
    user = get_user_model().objects.create(username="legacy", password=make_password("pw", hasher="md5"))
    assert succeeded("api", attempt(Client(), "api", "legacy", "pw"))
    user.refresh_from_db()
    assert user.password.startswith("argon2$")


# --- admin edits of memberships --------------------------------------------------------------------------


@pytest.fixture
def root_client():
    client = Client()
    client.force_login(UserFactory(username="root", is_superuser=True, is_staff=True))
    return client


def test_admin_membership_add_change_delete_are_audited(root_client):
    project = ProjectFactory()
    user = UserFactory(username="carol")
    add = root_client.post(
        "/admin/annotations/membership/add/",
        {"project": project.pk, "user": user.pk, "role": Role.ANNOTATOR},
    )
    assert add.status_code == 302, add.content[:2000]
    membership = Membership.objects.get(project=project, user=user)
    change = root_client.post(
        f"/admin/annotations/membership/{membership.pk}/change/",
        {"project": project.pk, "user": user.pk, "role": Role.DATA_MANAGER},
    )
    assert change.status_code == 302
    unchanged = root_client.post(
        f"/admin/annotations/membership/{membership.pk}/change/",
        {"project": project.pk, "user": user.pk, "role": Role.DATA_MANAGER},
    )
    assert unchanged.status_code == 302  # saved as it was: no second update event (checked below)
    delete = root_client.post(f"/admin/annotations/membership/{membership.pk}/delete/", {"post": "yes"})
    assert delete.status_code == 302 and not Membership.objects.exists()
    assert len(_events("membership.update")) == 1

    added, updated, removed = (
        _events(a)[0] for a in ("membership.add", "membership.update", "membership.remove")
    )
    assert added.project == project and added.target_id == str(membership.pk)
    assert added.details == {"user_id": user.pk, "role": Role.ANNOTATOR, "via": "admin"}
    assert updated.details == {
        "user_id": user.pk,
        "role": Role.DATA_MANAGER,
        "via": "admin",
        "previous": {"user_id": user.pk, "role": Role.ANNOTATOR, "project_id": project.pk},
    }
    assert removed.project == project
    assert removed.details == {
        "user_id": user.pk,
        "role": Role.DATA_MANAGER,
        "via": "admin",
        "membership_id": membership.pk,
    }
    assert {added.actor.username, updated.actor.username, removed.actor.username} == {"root"}


def test_admin_bulk_delete_of_memberships_is_audited(root_client):
    project = ProjectFactory()
    rows = [MembershipFactory(project=project, role=Role.ANNOTATOR) for _ in range(2)]
    resp = root_client.post(
        "/admin/annotations/membership/",
        {"action": "delete_selected", "_selected_action": [m.pk for m in rows], "post": "yes"},
    )
    assert resp.status_code == 302 and not Membership.objects.exists()
    removed = _events("membership.remove")
    assert sorted(e.details["membership_id"] for e in removed) == sorted(m.pk for m in rows)


def _change_form_data(resp) -> tuple[dict, object]:
    """The POST body the admin change page would send unchanged, and its membership formset."""
    data: dict = {}
    form = resp.context["adminform"].form
    for name in form.fields:
        value = form[name].value()
        if value is not None and value is not False:
            data[form.add_prefix(name)] = value
    (inline,) = [f for f in resp.context["inline_admin_formsets"] if f.formset.model is Membership]
    formset = inline.formset
    for name in formset.management_form.fields:
        data[formset.management_form.add_prefix(name)] = formset.management_form[name].value()
    for sub in formset.forms:
        for name in sub.fields:
            value = sub[name].value()
            if value is not None and value is not False:
                data[sub.add_prefix(name)] = value
    return data, formset


def test_admin_inline_membership_edits_are_audited(root_client):
    project = ProjectFactory()
    keep = MembershipFactory(project=project, user=UserFactory(username="dan"), role=Role.ANNOTATOR)
    gone = MembershipFactory(project=project, user=UserFactory(username="eve"), role=Role.ANNOTATOR)
    newcomer = UserFactory(username="fay")
    url = f"/admin/annotations/project/{project.pk}/change/"
    data, formset = _change_form_data(root_client.get(url))
    prefix = formset.prefix
    index = {sub.instance.pk: i for i, sub in enumerate(formset.forms)}
    data[f"{prefix}-{index[keep.pk]}-role"] = Role.ADMIN
    data[f"{prefix}-{index[gone.pk]}-DELETE"] = "on"
    n = len(formset.forms)
    data[f"{prefix}-TOTAL_FORMS"] = n + 1
    data.update({f"{prefix}-{n}-user": newcomer.pk, f"{prefix}-{n}-role": Role.ML_ENGINEER})
    resp = root_client.post(url, data)
    assert resp.status_code == 302, resp.context["errors"] if resp.context else resp.content[:500]

    (updated,) = _events("membership.update")
    (removed,) = _events("membership.remove")
    (added,) = _events("membership.add")
    assert updated.target_id == str(keep.pk) and updated.details["role"] == Role.ADMIN
    assert updated.details["previous"]["role"] == Role.ANNOTATOR
    assert removed.details == {
        "user_id": gone.user_id,
        "role": Role.ANNOTATOR,
        "via": "admin",
        "membership_id": gone.pk,
    }
    assert added.details == {"user_id": newcomer.pk, "role": Role.ML_ENGINEER, "via": "admin"}
    assert {e.project for e in (updated, removed, added)} == {project}
