"""Reading policy: how many readers each case gets.

A case's readers are the largest of the project's `readers_per_case`, `multi_read_readers` for a seeded
random `multi_read_share` of the cases, and `routing_readers` for the most uncertain `routing_share` of the
queued cases after each scoring (uncertainty routing). The per-case decision lives in
`Case.readers_required` and is only ever raised automatically: a case once judged uncertain keeps its extra
readers, and lowering the share later never takes a reading slot away from a case already being read.

The random share is a pure function of (seed, case id): `sha256("seed:case_id")` read as a number in
[0, 1) below the share. It does not depend on import order or batch size, so the same seed always picks
the same cases, and over many cases the picked fraction converges on the share."""

import hashlib
import math
from collections.abc import Iterable, Sequence

from django.db.models import F, Value
from django.db.models.expressions import Combinable
from django.db.models.functions import Greatest

from annotations.models import Case, Project


def share_draw(*, seed: int, case_id: int) -> float:
    """The case's uniform draw in [0, 1) for the multi-read share (deterministic)."""
    digest = hashlib.sha256(f"{seed}:{case_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def in_multi_read_share(*, project: Project, case_id: int) -> bool:
    return share_draw(seed=project.reading_seed, case_id=case_id) < project.multi_read_share


def case_readers(*, project: Project, case: Case) -> int:
    """Readers this case needs (what the queue and blind reading go by)."""
    return max(project.readers_per_case, case.readers_required)


def readers_wanted(project: Project) -> Combinable:
    """The same as `case_readers`, as an SQL expression on Case rows of `project`."""
    return Greatest(F("readers_required"), Value(project.readers_per_case))


def share_decide(*, project: Project, cases: Iterable[Case]) -> list[Case]:
    """Raise `readers_required` (in memory) of the unread cases that fall in the multi-read share; returns
    the ones changed, for the caller to save (bulk). Cases need `id`, `readers_required` and `reads_taken`
    loaded. Cases already being read keep their readers (the decision is made as a case enters the queue)."""
    changed: list[Case] = []
    if project.multi_read_share <= 0:
        return changed
    for case in cases:
        if case.reads_taken:
            continue
        if case.readers_required < project.multi_read_readers and in_multi_read_share(
            project=project, case_id=case.pk
        ):
            case.readers_required = project.multi_read_readers
            changed.append(case)
    return changed


def routing_pick(*, case_ids: Sequence[int], uncertainty: Sequence[float], share: float) -> list[int]:
    """The ceil(share * n) most uncertain of `case_ids` (higher = more uncertain; ties: lower id first)."""
    n = len(case_ids)
    if len(uncertainty) != n:
        raise ValueError("case_ids and uncertainty differ in length")
    k = min(n, math.ceil(share * n - 1e-9)) if share > 0 else 0
    order = sorted(range(n), key=lambda i: (-float(uncertainty[i]), case_ids[i]))
    return [int(case_ids[i]) for i in order[:k]]
