"""OpenAPI generation (drf-spectacular) that describes what the views really answer.

Besides the success bodies each view declares, every operation documents the errors it can return, all in
the one error body of the API ({"error": {"code", "message", "details"}}, apis/errors.py): 401 and 403 for
authenticated views, 404 for paths with an id and for list pages that do not exist, 400 and 415 where a
body, query parameters or headers are read, 429 where a throttle or the login lockout applies, and the codes a view
names itself in `error_statuses` ({"post": [409]}); 503 everywhere (a database restart). List views paginate, so their 200 is the envelope."""

from drf_spectacular.openapi import AutoSchema as BaseAutoSchema
from rest_framework import serializers
from rest_framework.permissions import AllowAny

ERROR_DESCRIPTIONS = {
    "400": "Invalid input: the message says which field and why.",
    "401": "Not signed in: send `Authorization: Token <key>` or a session cookie.",
    "403": "Signed in, but your role in this project does not allow this.",
    "404": "No such object, or it belongs to a project you are not a member of (the same answer).",
    "409": "Conflicts with the current state (e.g. a run already open, a stale base revision, no lease).",
    "410": "Gone: the object existed and has expired.",
    "413": "Too large: over an upload, pixel or decompression limit.",
    "415": "Unsupported media type for the request body.",
    "429": "Too many requests: throttled, or sign-in locked out (see Retry-After).",
    "507": "The media storage is full: nothing was saved; retry once an administrator has freed space.",
    "503": "The database is briefly unreachable (a restart or failover): retry after Retry-After seconds.",
}
_BODY_METHODS = ("POST", "PUT", "PATCH")
_NO_NUL = r"^[^\x00]*$"
_NON_BLANK = r"^[^\x00]*[^\s\x00][^\x00]*$"


class ErrorDetailSerializer(serializers.Serializer):
    code = serializers.CharField(help_text="stable machine-readable code, e.g. not_found, stale_base")
    message = serializers.CharField(help_text="for people; never carries patient data")
    details = serializers.JSONField(help_text="field errors or context, shape depends on the code")


class ErrorSerializer(serializers.Serializer):
    error = ErrorDetailSerializer()


class AutoSchema(BaseAutoSchema):
    """Name nested `InputSerializer`/`OutputSerializer` classes after their view (ProjectListApiInput, ...),
    so every view can use the house-style names without colliding in the OpenAPI components; and document
    every error status (module docstring), and the constraints the views enforce beyond field types."""

    def get_serializer_name(self, serializer, direction):
        qualname = type(serializer).__qualname__
        if "." in qualname:
            return qualname.replace(".", "").replace("Serializer", "")
        return super().get_serializer_name(serializer, direction)

    def _map_serializer_field(self, field, direction, bypass_extensions=False):
        """A list that must not be empty (allow_empty=False) says so: minItems 1. Text never holds NUL (DRF
        refuses it), and text that must not be blank, where DRF trims whitespace first, holds a character
        other than space."""
        schema = super()._map_serializer_field(field, direction, bypass_extensions)
        if not schema:
            return schema
        if schema.get("type") == "array" and getattr(field, "allow_empty", True) is False:
            schema.setdefault("minItems", 1)
        if schema.get("type") == "array" and getattr(field, "unique_items", False):
            schema["uniqueItems"] = True
        if (
            direction == "request"
            and isinstance(field, serializers.CharField)
            and schema.get("type") == "string"
        ):
            blank_refused = not field.allow_blank and field.trim_whitespace
            schema.setdefault("pattern", _NON_BLANK if blank_refused else _NO_NUL)
        return schema

    def _map_serializer(self, serializer, direction, bypass_extensions=False):
        """A PATCH body that changes nothing is refused (400): its schema asks for at least one property."""
        schema = super()._map_serializer(serializer, direction, bypass_extensions)
        if direction == "request" and self.method.upper() == "PATCH" and schema.get("type") == "object":
            schema.setdefault("minProperties", 1)
        return schema

    def _get_request_body(self, direction="request"):
        """A PATCH needs its body (an absent one changes nothing, and is refused like an empty one)."""
        body = super()._get_request_body(direction)
        if body is not None and self.method.upper() == "PATCH":
            body["required"] = True
        return body

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        for code in sorted(self._error_statuses()):
            if code not in responses:
                body = self._get_response_for_code(ErrorSerializer, code, direction=direction)
                responses[code] = {**body, "description": ERROR_DESCRIPTIONS.get(code, "")}
        return responses

    def _error_statuses(self) -> set[str]:
        view, method = self.view, self.method.upper()
        codes = {str(c) for c in getattr(view, "error_statuses", {}).get(method.lower(), ())}
        if not any(isinstance(p, AllowAny) for p in view.get_permissions()):
            codes |= {"401", "403"}
        if "{" in self.path or self._is_list_view() and self._get_paginator():
            codes.add("404")
        if method in _BODY_METHODS and self.get_request_serializer() is not None:
            codes |= {"400", "415"}
        if any(p["in"] in ("query", "header") for p in self._get_parameters()):
            codes.add("400")
        if getattr(view, "throttle_classes", None):
            codes.add("429")
        codes.add("503")  # hitl.core.unavailable: any request may meet a database restart
        return codes
