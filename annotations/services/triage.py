"""A data manager's decisions on flagged cases."""

from django.db import transaction

from annotations.models import Case
from hitl.core.audit import audit_record
from hitl.core.errors import ConflictError
from hitl.core.types import User


@transaction.atomic
def case_return_to_queue(*, case: Case, actor: User) -> Case:
    """A flagged case goes back to the reading queue (e.g. the image was fine after all); its readings and
    the flag's reason stay on record. 409 when the case is not flagged."""
    locked = Case.objects.select_for_update(no_key=True).get(pk=case.pk)
    if locked.flagged_at is None:
        raise ConflictError("not_flagged", "this case is not flagged")
    locked.flagged_at = None
    locked.save(update_fields=["flagged_at"])
    audit_record(
        actor=actor,
        action="case.return_to_queue",
        project=case.project,
        target=locked,
        details={"case_id": case.pk},
    )
    return locked
