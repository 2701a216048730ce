"""One error body for the whole API: {"error": {"code": ..., "message": ..., "details": ...}}."""

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.views import exception_handler as drf_exception_handler

from workers.ml.imaging import IngestError


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "too_large"
    default_detail = "the upload is larger than this server accepts"


def _message(detail) -> str:
    if isinstance(detail, list) and detail:
        return _message(detail[0])
    if isinstance(detail, dict) and detail:
        key, value = next(iter(detail.items()))
        return f"{key}: {_message(value)}"
    return str(detail)


def exception_handler(exc, context):
    if isinstance(exc, IngestError):
        code = getattr(exc, "code", "bad_request")
        exc = (
            PayloadTooLarge(str(exc))
            if code == "too_large"
            else exceptions.ValidationError({"file": [str(exc)]}, code)
        )
        exc.hitl_code = code
    elif isinstance(exc, DjangoValidationError):
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
    response.data = {"error": {"code": code, "message": _message(detail), "details": detail}}
    return response
