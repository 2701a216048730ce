"""One error body for the whole API: {"error": {"code": ..., "message": ..., "details": ...}}."""

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.views import exception_handler as drf_exception_handler

from workers.ml.imaging import IngestError
from workers.ml.imaging.errors import INGEST_ERROR_STATUS


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


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "conflict"
    default_detail = "conflict"


def _translate_domain(exc):
    """Map service-layer exceptions to HTTP ones; returns None when `exc` is not one of ours."""
    from annotations.services.annotations import StaleBase
    from annotations.services.masks import MaskError
    from annotations.services.queue import QueueError

    if isinstance(exc, StaleBase):
        out = Conflict(str(exc))
        out.hitl_code = "stale_base"
        out.hitl_details = {"current_revision": exc.current.revision if exc.current else None}
        return out
    from workers.services.registry import ConflictError

    if isinstance(exc, ConflictError):
        out = Conflict(str(exc))
        out.hitl_code = exc.code
        return out
    if isinstance(exc, QueueError):
        out = (
            exceptions.ValidationError({"detail": str(exc)})
            if exc.code == "reason_required"
            else Conflict(str(exc))
        )
        out.hitl_code = exc.code
        return out
    if isinstance(exc, MaskError):
        out = exceptions.ValidationError({"mask": [str(exc)]})
        out.hitl_code = exc.code
        return out
    return None


def exception_handler(exc, context):
    exc = _translate_domain(exc) or exc
    if isinstance(exc, IngestError):
        code = exc.code
        http = INGEST_ERROR_STATUS.get(code, 400)
        exc = (
            PayloadTooLarge(str(exc))
            if http == 413
            else Conflict(str(exc))
            if http == 409
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
    details = getattr(exc, "hitl_details", None) or detail
    response.data = {"error": {"code": code, "message": _message(detail), "details": details}}
    return response
