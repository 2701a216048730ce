"""Audit of sign-in events: failed logins, logins and logouts on every route (login page, admin, API token).

These are signal receivers, against the house rule of no signals, because Django's authentication offers no
other hook: the login page and the admin log users in inside django.contrib.auth, and a failure is only
visible as `user_login_failed`. They are connected in AnnotationsConfig.ready() and only write audit rows.
The password never reaches them: Django masks it in `credentials`, and only the username is kept."""

from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed

from annotations.auth_guard import client_ip
from hitl.core.audit import audit_record
from hitl.core.types import User

USERNAME_MAX = 150  # Django's username length; anything longer is junk worth only a prefix


def _route(request) -> str:
    path = getattr(request, "path", "") or ""
    if not path:  # no request (a script calling authenticate()) or a synthetic one (test client login)
        return "other"
    if path.startswith("/admin/"):
        return "admin"
    return "api" if path.startswith("/api/") else "form"


def _where(request) -> dict:
    return {"route": _route(request), "ip": client_ip(request) if request is not None else None}


def on_login_failed(sender, credentials, request=None, **kwargs) -> None:
    username = credentials.get("username")
    details = {
        "username": str(username)[:USERNAME_MAX] if username is not None else None,
        **_where(request),
        # axes' receiver runs first (its app is listed before ours) and flags a lock on the request
        "locked_out": bool(getattr(request, "axes_locked_out", False)),
    }
    audit_record(actor=None, action="auth.login_failed", details=details)


def on_logged_in(sender, request, user: User, **kwargs) -> None:
    audit_record(actor=user, action="auth.login", target=user, details=_where(request))


def on_logged_out(sender, request, user: User | None, **kwargs) -> None:
    if user is None:  # logging out without being logged in: nothing happened
        return
    audit_record(actor=user, action="auth.logout", target=user, details=_where(request))


def connect() -> None:
    user_login_failed.connect(on_login_failed, dispatch_uid="annotations.audit.login_failed")
    user_logged_in.connect(on_logged_in, dispatch_uid="annotations.audit.logged_in")
    user_logged_out.connect(on_logged_out, dispatch_uid="annotations.audit.logged_out")
