"""The one base of every error a service raises on purpose. The API maps it once (hitl.core.apis.errors):
the response status is `status`, the body's code is `code`, so a new error needs no new mapping."""

from typing import Any


class DomainError(Exception):
    """A request the service refuses. `field`: the input field at fault (the body lists the message under
    it, as a validation error does); `details`: extra JSON for the client (ids, never patient data)."""

    status: int = 409
    code: str = "conflict"
    field: str | None = None

    def __init__(
        self,
        code: str | None = None,
        message: str = "",
        *,
        status: int | None = None,
        field: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message or code or self.code)
        self.code = code or self.code
        self.status = status or self.status
        self.field = field if field is not None else self.field
        self.details = details

    def body(self) -> tuple[str, Any]:
        """(message, details) of the error body; without explicit details a field error lists the message
        under the field ({"mask": [...]}), any other under "detail"."""
        message = str(self)
        if self.field:
            return f"{self.field}: {message}", self.details or {self.field: [message]}
        return message, self.details or {"detail": message}


class ConflictError(DomainError):
    """A request that contradicts the current state (HTTP 409)."""


class StorageFull(DomainError):
    """The media storage has no room left (or hit a quota) while saving a file: nothing was saved
    (hitl.core.filesystem). HTTP 507; the client may retry once an administrator frees space."""

    status = 507
    code = "storage_full"
