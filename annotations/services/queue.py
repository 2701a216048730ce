"""The reader queue: priorities (written by scoring), claims with leases, heartbeats, skip/flag, expiry."""

from dataclasses import dataclass
from typing import Any

from django.db import transaction

from annotations.models import Case, CaseSplit, Project


@dataclass(frozen=True)
class QueueEntry:
    case_id: int
    priority: float  # higher = read sooner
    reason: dict[str, Any]  # {"strategy", "score", "rank", "model_version", "model_version_id", "scored_at"}


@transaction.atomic
def queue_priorities_set(*, project: Project, entries: list[QueueEntry], reset_others: bool = True) -> int:
    """Replace the queue order of the project's pool with `entries` (cases of other projects are ignored).
    With `reset_others`, pool cases not in `entries` drop to the back (priority -inf is not portable: -1e9)."""
    by_id = {e.case_id: e for e in entries}
    cases = list(
        Case.objects.filter(project=project, split=CaseSplit.POOL).only("id", "priority", "queue_reason")
    )
    changed = []
    for case in cases:
        entry = by_id.get(case.pk)
        if entry is not None:
            case.priority, case.queue_reason = float(entry.priority), entry.reason
        elif reset_others:
            case.priority, case.queue_reason = -1e9, {}
        else:
            continue
        changed.append(case)
    Case.objects.bulk_update(changed, ["priority", "queue_reason"], batch_size=500)
    return len(changed)
