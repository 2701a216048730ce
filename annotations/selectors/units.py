"""The unit of work on volumes (issue 19): a project reads one slice at a time (`unit_slices` = 1, every case
on its own), slabs of k contiguous slices (k > 1: slices [b*k, (b+1)*k) of a volume form unit b), or whole
volumes (0). The unit stays the queue's and the reader's unit while every case keeps its own lease, revisions,
agreement and export rows:

- Units are queued by the score of their pool slices (`unit_score`: the max or the mean of the slices'
  priorities, which scoring writes), most uncertain unit first;
- a reader who has started a unit is given its remaining slices first, one after another, the most
  uncertain slice of the unit first (then by slice index);
- a unit another reader has started is left to them: its slices are offered to someone else only while
  they still need more readers than have started the unit (multi-reading reads whole units too).
"""

from __future__ import annotations

from django.db.models import (
    Avg,
    Count,
    Exists,
    ExpressionWrapper,
    F,
    IntegerField,
    Max,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Value,
)
from django.db.models.functions import Coalesce

from annotations.models import Assignment, Case, CaseSplit, Project, UnitScore
from annotations.selectors.reading_policy import readers_wanted
from hitl.core.types import User

WHOLE_VOLUME = 0


def unit_range(project: Project, case: Case) -> tuple[int, int]:
    """(first, last) slice index of the unit `case` belongs to."""
    k, n = project.unit_slices, int(case.image.shape[0])
    if k == WHOLE_VOLUME:
        return 0, n - 1
    first = (case.slice_index // k) * k
    return first, min(n, first + k) - 1


def _in_unit(k: int, prefix: str = "") -> Q:
    """Rows (cases, or assignments through `prefix`) in the same image and unit as the outer case row."""
    image = OuterRef("image_id")
    if k == WHOLE_VOLUME:
        return Q(**{f"{prefix}image_id": image})
    start = OuterRef("unit_block") * k
    return Q(
        **{
            f"{prefix}image_id": image,
            f"{prefix}slice_index__gte": start,
            f"{prefix}slice_index__lt": start + k,
        }
    )


def unit_queue(cases: QuerySet[Case], *, project: Project, reader: User) -> QuerySet[Case]:
    """`cases` (the reader's claimable pool cases) in the unit order of the module docstring."""
    k = project.unit_slices
    whole = k == WHOLE_VOLUME
    block = Value(0) if whole else ExpressionWrapper(F("slice_index") / k, output_field=IntegerField())
    aggregate = Max if project.unit_score == UnitScore.MAX else Avg
    siblings = Case.objects.filter(_in_unit(k), split=CaseSplit.POOL).order_by()
    score = siblings.values("image_id").annotate(s=aggregate("priority")).values("s")[:1]
    assigned = Assignment.objects.filter(_in_unit(k, "case__"), project=project).order_by()
    others = (
        assigned.exclude(reader=reader).values("case__image_id").annotate(n=Count("reader", distinct=True))
    ).values("n")[:1]
    return (
        cases.annotate(unit_block=block)
        .annotate(
            unit_score=Subquery(score),
            unit_mine=Exists(assigned.filter(reader=reader)),
            unit_others=Coalesce(Subquery(others, output_field=IntegerField()), 0),
        )
        .filter(Q(unit_mine=True) | Q(unit_others__lt=readers_wanted(project)))
        .order_by("-unit_mine", "-unit_score", "image_id", "unit_block", "-priority", "slice_index", "id")
    )
