"""The reader queue: priorities (written by scoring), claims with leases, heartbeats, skip/flag, expiry.

Claiming locks the chosen case row (`SELECT ... FOR NO KEY UPDATE SKIP LOCKED` on PostgreSQL, where the common
claim is a single statement, see services.queue_pg; on SQLite the IMMEDIATE transaction is the single-writer
lock), takes the lowest free reading slot from the case's slot bitmask, and writes the assignment. A lease
belongs to the editor tab that claimed it (`holder`, from the X-Editor-Tab header; API clients send none):
another tab of the same reader sees the lease as held elsewhere until it takes it over, and a reader whose
lease lapsed re-claims the same case while it still has a free slot (`case_reclaim`), keeping their mask. Row locks
here are NO KEY UPDATE: they exclude each other, but not the KEY SHARE lock a transaction takes on a case
while it inserts a row pointing at it (the worker writing a proposal, score or explanation; a reader's
revision), so a case is never skipped or waited on for that. A case has as many slots as the reading policy
gives it readers (`max(project.readers_per_case, case.readers_required)`, see services.reading_policy).
Database constraints back every rule: one holder per (case, slot), a reader reads a case once, one active
lease per reader and project."""

from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone

from annotations.models import Assignment, AssignmentStatus, Case, CaseSplit, Project
from annotations.models.queue import READ_ONCE
from annotations.selectors.reading_policy import case_readers, readers_wanted
from annotations.selectors.units import own_unit, unit_order, unit_range
from annotations.services.queue_pg import claim_one_statement
from hitl.core import task_names
from hitl.core.audit import audit_record
from hitl.core.errors import DomainError
from hitl.core.lanes import INTERACTIVE
from hitl.core.outbox import outbox_enqueue
from hitl.core.types import User
from workers.selectors.registry import proposals_missing


class QueueError(DomainError):
    """A queue action that cannot be done (HTTP 409; 400 when a required reason is missing)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message, status=400 if code == "reason_required" else 409)


def lease_seconds() -> int:
    return int(settings.HITL_LEASE_SECONDS)


def _lowest_free_slot(mask: int, slots: int) -> int:
    for slot in range(slots):
        if not mask & (1 << slot):
            return slot
    raise QueueError("no_slot", "the case has no free reading slot")


def _next_case(project: Project, reader: User, *, skip_locked: bool = True) -> Case | None:
    already_read = Assignment.objects.filter(project=project, reader=reader, status__in=READ_ONCE).values(
        "case_id"
    )
    cases = (
        Case.objects.filter(project=project, split=CaseSplit.POOL, flagged_at=None)
        .filter(reads_taken__lt=readers_wanted(project))
        .exclude(pk__in=already_read)
    )
    if project.unit_slices == 1:
        return _lock_first(cases.order_by("-priority", "id"), skip_locked)
    # slabs or whole volumes (selectors.units): the rest of the reader's own unit first, then units in order
    own = own_unit(project, reader)
    if own is not None:
        case = _lock_first(cases.filter(own).order_by("-priority", "slice_index", "id"), skip_locked)
        if case is not None:
            return case
    ordered = unit_order(cases, project=project, reader=reader, lease_s=lease_seconds(), now=timezone.now())
    return _lock_first(ordered, skip_locked)


def _lock_first(cases, skip_locked: bool) -> Case | None:
    return (
        cases.select_for_update(skip_locked=skip_locked, of=("self",), no_key=True)
        .only("id", "slots_mask", "reads_taken", "queue_reason", "priority", "readers_required")
        .first()
    )


def case_claim_next(*, project: Project, reader: User, tab: str = "") -> Assignment | None:
    """The caller's active lease if it has one (claiming is idempotent), else a new lease on the
    highest-priority case the caller has not read and that still has a free slot (in a project with slabs
    or whole volumes as its unit of work, in the unit order of selectors.units); None when the queue is
    empty for this reader. On PostgreSQL the common claim of a slice-by-slice project is one statement
    (services.queue_pg); what it leaves (a lease held or expired, an empty queue), unit projects and SQLite
    take the ORM path: four queries."""
    try:
        if connection.vendor == "postgresql" and project.unit_slices == 1:  # units: the ORM path orders them
            now = timezone.now()
            expires = now + timedelta(seconds=lease_seconds())
            assignment = claim_one_statement(
                project=project, reader=reader, now=now, expires=expires, holder=tab
            )
            if assignment is not None:
                return assignment
        return _claim_orm(project=project, reader=reader, tab=tab)
    except IntegrityError as exc:  # e.g. the same reader claiming twice at once: the constraint wins
        raise QueueError("conflict", "this claim conflicted with a concurrent one; retry") from exc


def proposal_soon(*, project: Project, case_id: int) -> None:
    """A claimed case the active version has not proposed for yet (beyond the head that a new version
    proposes for first, while the pool is still being scored) gets its proposal on the interactive lane: the
    reader waits for it, never behind a training run, a scoring or a report. In a project whose unit of work
    is a slab or a volume, the unit's other pool slices without a proposal come in the same task, so the
    reader's next slices are ready. Called after the claim, so the claim itself stays one statement."""
    case_ids = [case_id]
    if project.unit_slices != 1:
        case = Case.objects.select_related("image").get(pk=case_id)
        first, last = unit_range(project, case)
        unit = Case.objects.filter(
            image_id=case.image_id, split=CaseSplit.POOL, slice_index__gte=first, slice_index__lte=last
        )
        case_ids = sorted(set(unit.values_list("pk", flat=True)) | {case_id})
    version_id, missing = proposals_missing(project_id=project.pk, case_ids=case_ids)
    if version_id is not None and missing:
        with transaction.atomic():
            outbox_enqueue(
                task=task_names.PROPOSAL_COMPUTE,
                kwargs={"version_id": version_id, "case_ids": missing},
                queue=INTERACTIVE,
            )


@transaction.atomic
def _claim_orm(*, project: Project, reader: User, tab: str = "") -> Assignment | None:
    now = timezone.now()
    held = Assignment.objects.filter(project=project, reader=reader, status=AssignmentStatus.ACTIVE).first()
    if held is not None:
        if held.expires_at > now:
            return held
        assignment_end(held, AssignmentStatus.EXPIRED, now=now)
    case = _next_case(project, reader)
    if case is None and connection.vendor == "postgresql":
        # Every candidate was locked (re-scoring rewrites the whole queue order in one transaction), or the
        # queue is empty: wait for the locks rather than tell the reader there is nothing to read.
        case = _next_case(project, reader, skip_locked=False)
    if case is None:
        return None
    # No savepoint (it would cost two more round trips): on a conflict the whole claim rolls back, and
    # case_claim_next turns the IntegrityError into a "conflict".
    return _lease(project=project, case=case, reader=reader, tab=tab, now=now, action="case.claim")


def _lease(*, project: Project, case: Case, reader: User, tab: str, now, action: str) -> Assignment:
    """A new lease on the lowest free slot of `case` (locked by the caller)."""
    slot = _lowest_free_slot(case.slots_mask, case_readers(project=project, case=case))
    assignment = Assignment.objects.create(
        project=project,
        case=case,
        reader=reader,
        slot=slot,
        queue_reason=case.queue_reason,
        claimed_at=now,
        expires_at=now + timedelta(seconds=lease_seconds()),
        holder=tab,
    )
    Case.objects.filter(pk=case.pk).update(
        slots_mask=F("slots_mask").bitor(1 << slot), reads_taken=F("reads_taken") + 1
    )
    _audit(assignment, action, actor=reader, project=project, details={"slot": slot})
    assignment.case = case
    return assignment


def _audit(
    assignment: Assignment, action: str, *, actor: User, project: Project, details: dict | None = None
) -> None:
    """Lease events in the audit trail: ids only (a skip or flag reason is free text, kept on the lease)."""
    audit_record(
        actor=actor,
        action=action,
        project=project,
        target=assignment,
        details={"case_id": assignment.case_id, **(details or {})},
    )


def assignment_end(
    assignment: Assignment, status: str, *, now, reason: str = "", keeps_slot: bool = False
) -> None:
    """Close an active assignment; unless it keeps its slot (submitted), the slot returns to the queue."""
    updated = Assignment.objects.filter(pk=assignment.pk, status=AssignmentStatus.ACTIVE).update(
        status=status, finished_at=now, reason=reason[:500]
    )
    if not updated:
        raise QueueError("lease_gone", "this lease is no longer active")
    if not keeps_slot:
        Case.objects.filter(pk=assignment.case_id).update(
            slots_mask=F("slots_mask").bitand(~(1 << assignment.slot)), reads_taken=F("reads_taken") - 1
        )
    assignment.status, assignment.finished_at = status, now


def held_elsewhere(assignment: Assignment, tab: str) -> bool:
    """The lease belongs to another editor tab than `tab` (never for API clients, which send no tab)."""
    return bool(tab and assignment.holder and assignment.holder != tab)


def _checked(assignment: Assignment | None, tab: str = "") -> Assignment:
    if assignment is None:
        raise QueueError("no_lease", "you hold no lease on this case; claim it from the queue first")
    if assignment.expires_at <= timezone.now():
        raise QueueError("lease_expired", "your lease on this case expired; claim again")
    if held_elsewhere(assignment, tab):
        raise QueueError("lease_moved", "this case is open in another tab or window of yours; take it over")
    return assignment


def active_assignment(*, case: Case, reader: User, lock: bool = False, tab: str = "") -> Assignment:
    qs = Assignment.objects.filter(case=case, reader=reader, status=AssignmentStatus.ACTIVE)
    return _checked((qs.select_for_update(no_key=True) if lock else qs).first(), tab)


def active_assignment_lock_case(*, case: Case, reader: User, tab: str = "") -> Assignment:
    """The reader's active lease on `case`, with the lease row and the case row locked in one statement;
    `assignment.case` is the case as it is now (e.g. its current revision), read under the lock."""
    qs = (
        Assignment.objects.filter(case=case, reader=reader, status=AssignmentStatus.ACTIVE)
        .select_related("case")
        .select_for_update(of=("self", "case"), no_key=True)
        .order_by()
    )
    return _checked(qs.first(), tab)


@transaction.atomic
def assignment_heartbeat(*, case: Case, reader: User, tab: str = "") -> Assignment:
    assignment = active_assignment(case=case, reader=reader, lock=True, tab=tab)
    assignment.expires_at = timezone.now() + timedelta(seconds=lease_seconds())
    assignment.save(update_fields=["expires_at"])
    return assignment


@transaction.atomic
def assignment_skip(*, case: Case, reader: User, reason: str, tab: str = "") -> Assignment:
    """Skip with a reason: the slot returns to the queue; this reader will not be offered the case again."""
    if not reason.strip():
        raise QueueError("reason_required", "say why you skip this case")
    assignment = active_assignment(case=case, reader=reader, lock=True, tab=tab)
    assignment_end(assignment, AssignmentStatus.SKIPPED, now=timezone.now(), reason=reason)
    _audit(assignment, "case.skip", actor=reader, project=case.project)
    return assignment


@transaction.atomic
def assignment_flag(*, case: Case, reader: User, reason: str, tab: str = "") -> Assignment:
    """Flag (e.g. "image unreadable"): the case leaves the queue for everyone until a data manager acts."""
    if not reason.strip():
        raise QueueError("reason_required", "say what is wrong with this case")
    assignment = active_assignment(case=case, reader=reader, lock=True, tab=tab)
    now = timezone.now()
    assignment_end(assignment, AssignmentStatus.FLAGGED, now=now, reason=reason)
    Case.objects.filter(pk=case.pk).update(flagged_at=now)
    _audit(assignment, "case.flag", actor=reader, project=case.project)
    return assignment


@transaction.atomic
def assignment_release(*, case: Case, reader: User, tab: str = "") -> Assignment:
    """Give the case back to the queue. From another tab than the holder: lease_moved (closing a second,
    read-only tab never releases the case the first one is editing)."""
    assignment = active_assignment(case=case, reader=reader, lock=True, tab=tab)
    assignment_end(assignment, AssignmentStatus.RELEASED, now=timezone.now())
    _audit(assignment, "case.release", actor=reader, project=case.project)
    return assignment


@transaction.atomic
def assignment_take_over(*, case: Case, reader: User, tab: str) -> Assignment:
    """Move the reader's lease on `case` to editor tab `tab` (renewed); the other tab becomes read-only at
    its next heartbeat."""
    if not tab:
        raise QueueError("tab_required", "send the X-Editor-Tab header of the tab that takes the case over")
    assignment = active_assignment(case=case, reader=reader, lock=True)
    assignment.holder = tab
    assignment.expires_at = timezone.now() + timedelta(seconds=lease_seconds())
    assignment.save(update_fields=["holder", "expires_at"])
    _audit(assignment, "case.take_over", actor=reader, project=case.project)
    return assignment


@transaction.atomic
def case_reclaim(*, case: Case, reader: User, tab: str = "") -> Assignment:
    """A new lease on this very case for a reader whose lease lapsed (expired or released) while the page
    stayed open: granted while the case is still in the queue with a free slot and the reader has not
    submitted, skipped or flagged it. The reader's own live lease on it is returned as is (any tab)."""
    project = case.project
    now = timezone.now()
    held = (
        Assignment.objects.select_for_update(no_key=True)
        .filter(project=project, reader=reader, status=AssignmentStatus.ACTIVE)
        .first()
    )
    if held is not None and held.expires_at <= now:
        assignment_end(held, AssignmentStatus.EXPIRED, now=now)
        held = None
    if held is not None:
        if held.case_id != case.pk:
            raise QueueError("lease_elsewhere", f"you hold case {held.case_id}; submit or release it first")
        return held
    if Assignment.objects.filter(case=case, reader=reader, status__in=READ_ONCE).exists():
        raise QueueError("already_read", "you have already submitted, skipped or flagged this case")
    lapsed = (AssignmentStatus.EXPIRED, AssignmentStatus.RELEASED)
    if not Assignment.objects.filter(case=case, reader=reader, status__in=lapsed).exists():
        # only a case the queue gave this reader: never a way around the queue's order and routing
        raise QueueError("never_held", "the queue never gave you this case; claim from the queue")
    locked = (
        Case.objects.select_for_update(no_key=True)
        .filter(pk=case.pk, split=CaseSplit.POOL, flagged_at=None)
        .only("id", "slots_mask", "reads_taken", "queue_reason", "readers_required")
        .first()
    )
    if locked is None:
        raise QueueError("case_closed", "this case has left the reading queue (flagged, or not a pool case)")
    if locked.reads_taken >= case_readers(project=project, case=locked):
        raise QueueError("case_taken", "every reading slot of this case is now held or read by others")
    return _lease(project=project, case=locked, reader=reader, tab=tab, now=now, action="case.reclaim")


def leases_expire(*, now=None) -> int:
    """Return expired leases' slots to the queue (periodic). Each lease in its own short transaction."""
    now = now or timezone.now()
    count = 0
    for pk in Assignment.objects.filter(status=AssignmentStatus.ACTIVE, expires_at__lte=now).values_list(
        "pk", flat=True
    ):
        with transaction.atomic():
            assignment = (
                Assignment.objects.select_for_update(no_key=True)
                .filter(pk=pk, status=AssignmentStatus.ACTIVE)
                .first()
            )
            if assignment is not None and assignment.expires_at <= now:
                assignment_end(assignment, AssignmentStatus.EXPIRED, now=now)
                count += 1
    return count
