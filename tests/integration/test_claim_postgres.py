"""The claim on PostgreSQL: one statement on the common path (services.queue_pg), the ORM path for what it
leaves (a held or expired lease, an empty queue), and the same rules as on SQLite."""

import threading
import time
from contextlib import contextmanager
from datetime import timedelta

import nibabel as nib
import numpy as np
import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from annotations.models import Assignment, AssignmentStatus, Case, Role
from annotations.services.queue import active_assignment_lock_case, assignment_skip, case_claim_next
from hitl.core.models import AuditEvent
from tests.factories import MembershipFactory, ProjectFactory, UserFactory
from workers.services.imports import image_import
from workers.services.queue_order import QueueEntry, queue_priorities_set

pytestmark = pytest.mark.django_db


@pytest.fixture
def project():
    project = ProjectFactory(readers_per_case=2)
    dm = UserFactory(username="dm")
    MembershipFactory(project=project, user=dm, role=Role.DATA_MANAGER)
    vol = np.random.default_rng(0).normal(size=(8, 8, 3)).astype(np.float32)
    image_import(project=project, user=dm, data=nib.Nifti1Image(vol, np.eye(4)).to_bytes())
    cases = list(Case.objects.filter(project=project).order_by("slice_index"))
    assert len(cases) == 3 and {c.split for c in cases} == {"pool"}
    queue_priorities_set(
        project=project,
        entries=[
            QueueEntry(c.pk, float(i), {"strategy": "bald", "rank": 3 - i}) for i, c in enumerate(cases)
        ],
    )
    return project


def _reader(project, name):
    user = UserFactory(username=name)
    MembershipFactory(project=project, user=user, role=Role.ANNOTATOR)
    return user


def _statements(ctx) -> list[str]:
    return [q["sql"] for q in ctx.captured_queries if "SAVEPOINT" not in q["sql"]]


def test_a_fresh_claim_is_one_statement_and_takes_the_top_case_and_lowest_slot(project):
    top = Case.objects.filter(project=project).order_by("-priority").first()
    reader = _reader(project, "a")
    with CaptureQueriesContext(connection) as ctx:
        assignment = case_claim_next(project=project, reader=reader)
    assert len(_statements(ctx)) == 1, _statements(ctx)
    assert (assignment.case_id, assignment.slot, assignment.status) == (top.pk, 0, AssignmentStatus.ACTIVE)
    assert assignment.queue_reason == {"strategy": "bald", "rank": 1}
    stored = Assignment.objects.get(pk=assignment.pk)
    assert stored.queue_reason == assignment.queue_reason and stored.expires_at == assignment.expires_at
    top.refresh_from_db()
    assert (top.reads_taken, top.slots_mask) == (1, 0b1)
    (event,) = AuditEvent.objects.filter(action="case.claim")  # written by the same statement
    assert (event.actor_id, event.project_id, event.target_id) == (reader.pk, project.pk, str(assignment.pk))
    assert event.details == {"case_id": top.pk, "slot": 0}


def test_second_reader_gets_the_next_slot_then_the_case_is_full(project):
    first, second, third = (case_claim_next(project=project, reader=_reader(project, n)) for n in "abc")
    assert first.case_id == second.case_id and (first.slot, second.slot) == (0, 1)
    assert third.case_id != first.case_id and third.slot == 0
    assert Case.objects.get(pk=first.case_id).slots_mask == 0b11


def test_claiming_again_returns_the_held_lease(project):
    reader = _reader(project, "a")
    first = case_claim_next(project=project, reader=reader)
    assert case_claim_next(project=project, reader=reader).pk == first.pk
    assert Assignment.objects.filter(reader=reader).count() == 1


def test_an_expired_held_lease_is_closed_and_a_new_case_claimed(project):
    reader = _reader(project, "a")
    first = case_claim_next(project=project, reader=reader)
    past = timezone.now() - timedelta(seconds=1)
    Assignment.objects.filter(pk=first.pk).update(claimed_at=past - timedelta(hours=1), expires_at=past)
    second = case_claim_next(project=project, reader=reader)
    assert second.pk != first.pk
    assert Assignment.objects.get(pk=first.pk).status == AssignmentStatus.EXPIRED
    # the expired lease's case was released, and the reader may take it again: it was never read
    assert second.case_id == first.case_id


def test_a_skipped_case_is_never_offered_again_and_the_queue_runs_dry(project):
    reader = _reader(project, "a")
    seen = []
    while (assignment := case_claim_next(project=project, reader=reader)) is not None:
        seen.append(assignment.case_id)
        assignment_skip(case=Case.objects.get(pk=assignment.case_id), reader=reader, reason="not mine")
    assert len(seen) == len(set(seen)) == 3


def test_flagged_and_non_pool_cases_are_not_claimed(project):
    cases = list(Case.objects.filter(project=project).order_by("-priority"))
    Case.objects.filter(pk=cases[0].pk).update(flagged_at=timezone.now())
    Case.objects.filter(pk=cases[1].pk).update(split="test")
    assert case_claim_next(project=project, reader=_reader(project, "a")).case_id == cases[2].pk


def test_per_case_readers_above_the_project_default_give_more_slots(project):
    case = Case.objects.filter(project=project).order_by("-priority").first()
    Case.objects.filter(pk=case.pk).update(readers_required=3)
    slots = [case_claim_next(project=project, reader=_reader(project, n)) for n in "abc"]
    assert {a.case_id for a in slots} == {case.pk} and sorted(a.slot for a in slots) == [0, 1, 2]


def test_an_empty_queue_claims_nothing():
    project = ProjectFactory()
    assert case_claim_next(project=project, reader=_reader(project, "a")) is None


# What a worker's open transaction holds while it inserts proposal, score or explanation rows for cases (or
# a reader's revision): FOR KEY SHARE locks on the case rows, from the foreign key.
KEY_SHARE = "SELECT id FROM annotations_case WHERE project_id = %s FOR KEY SHARE"
# What re-scoring holds while it writes the new queue order: every pool case row, updated.
REWRITE = "UPDATE annotations_case SET priority = priority WHERE project_id = %s"


def _hold(sql: str, project_id: int, held: threading.Event, release: threading.Event) -> None:
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql, [project_id])
            held.set()
            release.wait(timeout=30)
    finally:
        connection.close()


@contextmanager
def _locks_held_elsewhere(sql: str, project_id: int):
    """Run `sql` in another connection's open transaction; yields the event that ends it."""
    held, release = threading.Event(), threading.Event()
    other = threading.Thread(target=_hold, args=(sql, project_id, held, release))
    other.start()
    try:
        assert held.wait(timeout=10)
        yield release
    finally:
        release.set()
        other.join(timeout=30)


@pytest.mark.django_db(transaction=True)
def test_proposals_being_written_do_not_hide_cases_from_readers(project):
    """Claims and submissions lock case rows FOR NO KEY UPDATE: they must neither skip nor wait for a case
    whose proposal the worker is inserting in an open transaction (FOR UPDATE would conflict with it)."""
    reader = _reader(project, "a")
    with _locks_held_elsewhere(KEY_SHARE, project.pk) as release:
        start = time.monotonic()
        assignment = case_claim_next(project=project, reader=reader)
        with transaction.atomic():
            locked = active_assignment_lock_case(case=Case(pk=assignment.case_id), reader=reader)
        assert not release.is_set() and time.monotonic() - start < 5  # neither waited for the worker
    assert locked.pk == assignment.pk and locked.case.project_id == project.pk


@pytest.mark.django_db(transaction=True)
def test_a_claim_during_rescoring_waits_instead_of_reporting_an_empty_queue(project):
    """While re-scoring rewrites every pool case's priority in one transaction, SKIP LOCKED sees no case at
    all; the claim must then wait for that transaction rather than tell the reader the queue is empty."""
    reader = _reader(project, "a")
    with _locks_held_elsewhere(REWRITE, project.pk) as release:
        threading.Timer(0.5, release.set).start()
        assignment = case_claim_next(project=project, reader=reader)
    assert assignment is not None and assignment.case.project_id == project.pk
