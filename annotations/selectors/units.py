"""The unit of work on volumes (issue 19): a project reads one slice at a time (`unit_slices` = 1, every case
on its own), slabs of k contiguous slices (k > 1: slices [b*k, (b+1)*k) of a volume form unit b), or whole
volumes (0). The unit is the queue's and the reader's unit while every case keeps its own lease, revisions,
agreement and export rows:

- Units are queued by the score of their pool slices (`Case.unit_priority`, written with the priorities by
  `unit_scores`: the max, the mean, or the mean of the top quarter of the slices' priorities), most
  uncertain unit first; within a unit, the most uncertain slice first.
- A reader who has started a unit (their latest claim) is given its remaining slices first.
- A unit another reader is working in (their latest claim is there, held or finished within the lease
  time) is left to them when its cases need one reader; once they have been gone that long, its remaining
  slices go back to everyone. Multi-read cases are offered to every reader as usual.

Claims read only indexed columns: the reader's own latest assignment, the recent assignments of others
(one query each), then the candidate cases in unit order.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime, timedelta

from django.db.models import ExpressionWrapper, F, IntegerField, Q, QuerySet, Value

from annotations.models import Assignment, AssignmentStatus, Case, Project, UnitScore
from hitl.core.types import User

WHOLE_VOLUME = 0


def unit_bounds(k: int, slice_index: int, n_slices: int) -> tuple[int, int]:
    """(first, last) slice index of the unit holding `slice_index` in a volume of `n_slices`."""
    if k == WHOLE_VOLUME:
        return 0, n_slices - 1
    first = (slice_index // k) * k
    return first, min(n_slices, first + k) - 1


def unit_range(project: Project, case: Case) -> tuple[int, int]:
    """(first, last) slice index of the unit `case` belongs to."""
    return unit_bounds(project.unit_slices, case.slice_index, int(case.image.shape[0]))


def unit_scores(rows: Iterable[tuple[int, int, int, float]], k: int, how: str) -> dict[int, float]:
    """case id -> its unit's score, from (case id, image id, slice index, priority) of the pool's cases."""
    units: dict[tuple[int, int], list[tuple[int, float]]] = defaultdict(list)
    for case_id, image_id, slice_index, priority in rows:
        block = 0 if k == WHOLE_VOLUME else slice_index // k
        units[(image_id, block)].append((case_id, float(priority)))
    out: dict[int, float] = {}
    for members in units.values():
        values = sorted((p for _c, p in members), reverse=True)
        if how == UnitScore.MEAN:
            score = sum(values) / len(values)
        elif how == UnitScore.TOPK:
            top = values[: max(1, math.ceil(len(values) / 4))]
            score = sum(top) / len(top)
        else:
            score = values[0]
        out.update((case_id, score) for case_id, _p in members)
    return out


def _unit_q(project: Project, case: Case) -> Q:
    first, last = unit_range(project, case)
    return Q(image_id=case.image_id, slice_index__gte=first, slice_index__lte=last)


def own_unit(project: Project, reader: User) -> Q | None:
    """The cases of the unit of the reader's latest claim in `project` (None before their first)."""
    latest = (
        Assignment.objects.filter(project=project, reader=reader)
        .select_related("case__image")
        .order_by("-claimed_at", "-id")
        .first()
    )
    return _unit_q(project, latest.case) if latest is not None else None


def units_held_by_others(project: Project, reader: User, since: datetime) -> Q | None:
    """The units other readers work in: each one's latest claim since `since` (held, or finished since)."""
    recent = (
        Assignment.objects.filter(project=project, claimed_at__gte=since)
        .exclude(reader=reader)
        .filter(Q(status=AssignmentStatus.ACTIVE) | Q(finished_at__gte=since))
        .select_related("case__image")
        .order_by("reader_id", "-claimed_at", "-id")
    )
    seen: set[int] = set()
    held: Q | None = None
    for assignment in recent:
        if assignment.reader_id in seen:
            continue
        seen.add(assignment.reader_id)
        q = _unit_q(project, assignment.case)
        held = q if held is None else held | q
    return held


def unit_order(
    cases: QuerySet[Case], *, project: Project, reader: User, lease_s: int, now: datetime
) -> QuerySet:
    """The reader's claimable `cases` in unit order (see the module docstring), minus the units held by
    others when those cases need one reader."""
    held = units_held_by_others(project, reader, now - timedelta(seconds=lease_s))
    if held is not None and project.readers_per_case == 1:
        cases = cases.exclude(held & Q(readers_required__lte=1))
    k = project.unit_slices
    block = (
        Value(0)
        if k == WHOLE_VOLUME
        else ExpressionWrapper(F("slice_index") / k, output_field=IntegerField())
    )
    return cases.annotate(unit_block=block).order_by(
        "-unit_priority", "image_id", "unit_block", "-priority", "id"
    )
