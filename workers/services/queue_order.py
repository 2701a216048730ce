"""The queue order the machine side writes: after a scoring (or the cold start) the pool's priorities, and
uncertainty routing of the reading policy. Reads of the policy: annotations.selectors.reading_policy."""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.db import transaction

from annotations.models import Case, CaseSplit, Project
from annotations.selectors.reading_policy import routing_pick, share_decide
from annotations.selectors.units import unit_scores
from hitl.core.audit import audit_record


@dataclass(frozen=True)
class QueueEntry:
    case_id: int
    priority: float  # higher = read sooner
    reason: dict[str, Any]  # {"strategy", "score", "rank", "model_version", "model_version_id", "scored_at"}


@transaction.atomic
def queue_priorities_set(*, project: Project, entries: list[QueueEntry], reset_others: bool = True) -> int:
    """Replace the queue order of the project's pool with `entries` (cases of other projects are ignored).
    With `reset_others`, pool cases not in `entries` drop to the back. Cases entering the queue get their
    readers from the multi-read share here (reading policy)."""
    by_id = {e.case_id: e for e in entries}
    cases = list(
        Case.objects.filter(project=project, split=CaseSplit.POOL).only(
            "id", "priority", "queue_reason", "readers_required", "reads_taken", "image_id", "slice_index"
        )
    )
    shared = share_decide(project=project, cases=cases)
    if shared:
        Case.objects.bulk_update(shared, ["readers_required"], batch_size=500)
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
    if project.unit_slices != 1:  # slabs or volumes: each unit's score from its slices' new priorities
        rows = [(c.pk, c.image_id, c.slice_index, c.priority) for c in cases]
        scores = unit_scores(rows, project.unit_slices, project.unit_score)
        for case in cases:
            case.unit_priority = scores[case.pk]
        Case.objects.bulk_update(cases, ["unit_priority"], batch_size=500)
    return len(changed)


@transaction.atomic
def reading_policy_route(
    *, project: Project, case_ids: Sequence[int], uncertainty: Sequence[float]
) -> list[int]:
    """Uncertainty routing after a scoring: the most uncertain `routing_share` of `case_ids` (the scored
    open pool) need at least `routing_readers` readers. Returns the ids routed (raised or already there)."""
    routed = routing_pick(case_ids=case_ids, uncertainty=uncertainty, share=project.routing_share)
    if not routed:
        return []
    raised = Case.objects.filter(
        project=project, split=CaseSplit.POOL, pk__in=routed, readers_required__lt=project.routing_readers
    ).update(readers_required=project.routing_readers)
    if raised:
        audit_record(
            actor=None,
            action="reading_policy.route",
            project=project,
            details={"routed": len(routed), "raised": raised, "readers": project.routing_readers},
        )
    return routed
