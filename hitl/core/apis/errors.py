"""One error body for the whole API: {"error": {"code": ..., "message": ..., "details": ...}}."""

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from hitl.core.errors import DomainError


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "too_large"
    default_detail = "the upload is larger than this server accepts"


def _message(detail) -> str:
    if isinstance(detail, list) and detail:
        return _message(detail[0])
    if isinstance(detail, dict) and "detail" in detail:
        return _message(detail["detail"])
    if isinstance(detail, dict) and detail:
        key, value = next(iter(detail.items()))
        return f"{key}: {_message(value)}"
    return str(detail)


class LockedOut(exceptions.APIException):
    """Too many failed logins for this username or from this address (django-axes); `wait` sets Retry-After."""

    status_code = status.HTTP_429_TOO_MANY_REQUESTS
    default_code = "locked_out"
    default_detail = "too many failed sign-ins: try again later"

    def __init__(self, detail: str, *, wait: int, details: dict):
        super().__init__(detail)
        self.wait = wait
        self.hitl_details = details


def _domain_response(exc: DomainError) -> Response:
    message, details = exc.body()
    return Response({"error": {"code": exc.code, "message": message, "details": details}}, status=exc.status)


def exception_handler(exc, context):
    if isinstance(exc, DomainError):
        return _domain_response(exc)
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(
            exc.message_dict if hasattr(exc, "error_dict") else {"detail": exc.messages}
        )
    elif isinstance(exc, PermissionError | DjangoPermissionDenied):
        exc = exceptions.PermissionDenied(str(exc) or None)
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    detail = response.data
    code = getattr(exc, "hitl_code", None) or getattr(exc, "default_code", "error")
    if isinstance(exc, exceptions.ValidationError):
        code = getattr(exc, "hitl_code", None) or "invalid"
    details = getattr(exc, "hitl_details", None) or detail
    response.data = {"error": {"code": code, "message": _message(detail), "details": details}}
    return response
