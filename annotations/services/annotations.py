"""Mask submission: an immutable new revision, checked against the reader's lease and base revision."""

import hashlib
from dataclasses import dataclass

import numpy as np
from django.db import transaction
from django.utils import timezone

from annotations.models import Annotation, AnnotationKind, Assignment, AssignmentStatus, Case
from annotations.selectors.reading_policy import case_readers
from annotations.services.masks import MaskError, check_labels, correction_effort
from annotations.services.queue import QueueError, active_assignment_lock_case, assignment_end
from hitl.core import task_names
from hitl.core.audit import audit_record
from hitl.core.errors import DomainError
from hitl.core.outbox import outbox_enqueue
from hitl.core.storage import bytes_load, label_counts, mask_from_png, mask_to_png, saved_unless_failed
from hitl.core.types import User
from workers.selectors.registry import ProposalRef, auto_retrain_on, proposal_ref

READER = AnnotationKind.READER.value


class StaleBase(DomainError):
    """The reader edited an older revision than the current one (HTTP 409 with the current revision)."""

    code = "stale_base"

    def __init__(self, current: Annotation | None) -> None:
        revision = current.revision if current is not None else None
        super().__init__(
            message="the case changed since you opened it", details={"current_revision": revision}
        )
        self.current = current


def _proposal_effort(proposal: ProposalRef | None, mask: np.ndarray) -> tuple[float | None, int | None]:
    if proposal is None or not proposal.mask_path:
        return None, None
    start = mask_from_png(bytes_load(proposal.mask_path))
    if start.shape != mask.shape:
        return None, None
    return correction_effort(start, mask)


@dataclass(frozen=True)
class _History:
    """The case's revisions as (id, revision, author, kind) rows, read once per submission."""

    rows: list[tuple[int, int, int | None, str]]

    def next_revision(self) -> int:
        return max((revision for _, revision, _, _ in self.rows), default=0) + 1

    def head_id(self, *, current_id: int | None, reader_id: int, blind: bool) -> int | None:
        """`visible_head` from the rows: the reader's own latest revision when reading blind."""
        if not blind:
            return current_id
        own = [(rev, pk) for pk, rev, author, kind in self.rows if author == reader_id and kind == READER]
        return max(own)[1] if own else None

    def revision_of(self, pk: int | None) -> int | None:
        return next((revision for row_id, revision, _, _ in self.rows if row_id == pk), None)

    def reader_authors(self) -> set[int]:
        return {author for _, _, author, kind in self.rows if kind == READER and author is not None}


@transaction.atomic
def annotation_submit(
    *,
    case: Case,
    reader: User,
    mask: np.ndarray,
    base_revision: int | None,
    time_spent_s: float,
    proposal_model_version_id: int | None = None,
    tab: str = "",
) -> Annotation:
    """Store `mask` as the next revision of `case` by `reader`, who must hold an active lease on it.
    `case` comes with its project and image (e.g. from `case_get_for_user`); the lease and the case row are
    locked here, and the case's revisions read under that lock.

    Raises MaskError (bad shape/labels), QueueError (no or expired lease, or one another editor tab `tab`
    holds), StaleBase (409)."""
    assignment = active_assignment_lock_case(case=case, reader=reader, tab=tab)
    annotation = _write_revision(
        case=case,
        assignment=assignment,
        reader=reader,
        mask=mask,
        base_revision=base_revision,
        time_spent_s=time_spent_s,
        proposal_model_version_id=proposal_model_version_id,
        action="annotation.submit",
    )
    assignment_end(assignment, AssignmentStatus.SUBMITTED, now=timezone.now(), keeps_slot=True)
    return annotation


@transaction.atomic
def annotation_revise(
    *,
    case: Case,
    reader: User,
    mask: np.ndarray,
    base_revision: int | None,
    time_spent_s: float,
    proposal_model_version_id: int | None = None,
) -> Annotation:
    """A new revision of a case the reader has already submitted ("my recent cases"): no lease and no
    reading slot (theirs stays taken); the same checks as a submission (shape, labels, base revision, the
    reader's own head when reading blind). Raises QueueError not_read / case_closed, MaskError, StaleBase."""
    assignment = (
        Assignment.objects.filter(case=case, reader=reader, status=AssignmentStatus.SUBMITTED)
        .select_related("case")
        .select_for_update(of=("self", "case"), no_key=True)
        .order_by()
        .first()
    )
    if assignment is None:
        raise QueueError("not_read", "you can revise only a case you have submitted")
    if assignment.case.flagged_at is not None:
        raise QueueError("case_closed", "this case was flagged and has left the reading queue")
    return _write_revision(
        case=case,
        assignment=assignment,
        reader=reader,
        mask=mask,
        base_revision=base_revision,
        time_spent_s=time_spent_s,
        proposal_model_version_id=proposal_model_version_id,
        action="annotation.revise",
    )


def _write_revision(
    *,
    case: Case,
    assignment: Assignment,
    reader: User,
    mask: np.ndarray,
    base_revision: int | None,
    time_spent_s: float,
    proposal_model_version_id: int | None,
    action: str,
) -> Annotation:
    """The checks and writes a submission and a revision share; `assignment.case` was read under a lock."""
    if tuple(mask.shape) != tuple(case.image.shape[1:3]):
        raise MaskError(
            "mask_shape_mismatch",
            f"mask shape {list(mask.shape)} does not match the image {case.image.shape[1:3]}",
        )
    check_labels(mask, case.project.label_values())
    history = _History(list(case.annotations.order_by().values_list("id", "revision", "author_id", "kind")))
    blind = case_readers(project=case.project, case=assignment.case) > 1  # as locked: routing may raise it
    head_id = history.head_id(
        current_id=assignment.case.current_annotation_id, reader_id=reader.pk, blind=blind
    )
    head_revision = history.revision_of(head_id)
    if head_revision != base_revision:
        raise StaleBase(Annotation.objects.filter(pk=head_id).first() if head_id else None)
    if not 0 <= time_spent_s <= 24 * 3600:
        raise MaskError("invalid_time", "time spent must be between 0 and 24 hours")
    proposal = None
    if proposal_model_version_id is not None:
        proposal = proposal_ref(case=case, version_id=proposal_model_version_id)
        if proposal is None:
            raise MaskError("invalid_model_version", "that model version does not belong to this project")
    effort_dice, pixels_changed = _proposal_effort(proposal, mask)
    png = mask_to_png(mask)
    revision = history.next_revision()
    name = f"projects/{case.project_id}/masks/case-{case.pk}/r{revision:04d}.png"
    with saved_unless_failed(name, png) as path:
        annotation = Annotation.objects.create(
            case=case,
            revision=revision,
            kind=AnnotationKind.READER,
            author=reader,
            base_id=head_id,
            mask_path=path,
            mask_sha256=hashlib.sha256(png).hexdigest(),
            label_counts=label_counts(mask),
            time_spent_s=float(time_spent_s),
            assignment=assignment,
            proposal_model_version_id=proposal.version_id if proposal else None,
            effort_dice=effort_dice,
            pixels_changed=pixels_changed,
        )
    Case.objects.filter(pk=case.pk).update(current_annotation=annotation)
    audit_record(
        actor=reader,
        action=action,
        project=case.project,
        target=annotation,
        details={"case_id": case.pk, "revision": revision, "base_revision": head_revision},
    )
    _enqueue_followups(case=case, readers=history.reader_authors() | {reader.pk}, blind=blind)
    return annotation


def _enqueue_followups(*, case: Case, readers: set[int], blind: bool) -> None:
    """Follow-up work, in the submission's transaction (outbox): the retraining check when the project
    retrains automatically, and the agreement of a case that now has two or more readers' masks."""
    if auto_retrain_on(project_id=case.project_id):
        outbox_enqueue(task=task_names.TRAINING_AUTO_CHECK, kwargs={"project_id": case.project_id})
    if blind and len(readers) >= 2:
        outbox_enqueue(task=task_names.AGREEMENT_UPDATE, kwargs={"case_id": case.pk})
