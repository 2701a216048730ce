"""Reading policy writes: re-apply the project's policy to its cases (the decisions themselves are
pure reads: annotations.selectors.reading_policy)."""

from django.db import transaction

from annotations.models import Case, CaseSplit, Project
from annotations.selectors.reading_policy import share_decide
from hitl.core.audit import audit_record
from hitl.core.types import User


@transaction.atomic
def reading_policy_apply(*, project: Project, actor: User | None = None) -> int:
    """Apply the multi-read share to every pool case now (e.g. after a data manager changed it); returns
    the cases raised. New cases get it when the queue order is next written."""
    cases = list(
        Case.objects.filter(project=project, split=CaseSplit.POOL).only(
            "id", "readers_required", "reads_taken"
        )
    )
    changed = share_decide(project=project, cases=cases)
    Case.objects.bulk_update(changed, ["readers_required"], batch_size=500)
    audit_record(
        actor=actor,
        action="reading_policy.apply",
        project=project,
        details={"raised": len(changed), "share": project.multi_read_share},
    )
    return len(changed)
