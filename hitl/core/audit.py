from typing import Any

from hitl.core.models import AuditEvent
from hitl.core.types import AnyUser, User


def audit_record(
    *,
    actor: AnyUser | None,
    action: str,
    project: Any = None,
    target: Any = None,
    details: dict | None = None,
) -> AuditEvent:
    """Append an audit row (`project`: an annotations.Project or None) in the caller's transaction. `details` must hold ids/settings only, never PHI."""
    return AuditEvent.objects.create(
        actor=actor if isinstance(actor, User) else None,  # an anonymous user is recorded as no one
        project=project,
        action=action,
        target_type=type(target).__name__.lower() if target is not None else "",
        target_id=str(getattr(target, "pk", "") or "") if target is not None else "",
        details=details or {},
    )
