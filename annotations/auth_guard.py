"""Login lockout glue for django-axes: which address a request comes from, what a locked-out client sees.

axes counts failures and decides the lock (settings: AXES_*); this module only answers its two callbacks
(AXES_CLIENT_IP_CALLABLE, AXES_LOCKOUT_CALLABLE) and gives the API and the pages one wording."""

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render


def client_ip(request: HttpRequest) -> str | None:
    """The client's address: REMOTE_ADDR, or with HITL_TRUSTED_PROXY_COUNT = N > 0 the N-th entry from the
    right of X-Forwarded-For (entries further left are written by the client and cannot be trusted)."""
    proxies = settings.HITL_TRUSTED_PROXY_COUNT
    if proxies > 0:
        forwarded = [a.strip() for a in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if a.strip()]
        if len(forwarded) >= proxies:
            return forwarded[-proxies]
    return request.META.get("REMOTE_ADDR")


def cooloff_seconds() -> int:
    return int(settings.AXES_COOLOFF_TIME.total_seconds())


def lockout_message() -> str:
    minutes = max(1, round(cooloff_seconds() / 60))
    return (
        f"Too many failed sign-ins for this account or from this address: sign-in is locked for "
        f"{minutes} minutes after the last attempt. Try again later, or ask an administrator to unlock it."
    )


def lockout_details() -> dict:
    return {"failure_limit": settings.AXES_FAILURE_LIMIT, "cooloff_seconds": cooloff_seconds()}


def lockout_response(request: HttpRequest, original_response=None, credentials=None) -> HttpResponse:
    """What axes' middleware sends instead of the login page's answer once the client is locked out: the
    sign-in page with the reason (form and admin), or the API's error body. Status 429 with Retry-After."""
    status = settings.AXES_HTTP_RESPONSE_CODE
    response: HttpResponse
    if request.path.startswith("/api/"):
        error = {"code": "locked_out", "message": lockout_message(), "details": lockout_details()}
        response = JsonResponse({"error": error}, status=status)
    else:
        response = render(
            request, "annotations/login.html", {"locked_out": lockout_message(), "next": "/"}, status=status
        )
    response["Retry-After"] = str(cooloff_seconds())
    return response
