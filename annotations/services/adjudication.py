"""Adjudication: an admin settles a multi-read case by adopting one of its revisions (a reader's mask or
the STAPLE consensus) as a new revision of kind `adjudicated`. It becomes the case's current mask; training
(every label policy) and consensus exports prefer it to the consensus."""

from django.db import transaction
from django.db.models import Max

from annotations.models import Annotation, AnnotationKind, Case
from hitl.core.audit import audit_record
from hitl.core.errors import ConflictError
from hitl.core.storage import bytes_load, label_counts, mask_from_png, saved_unless_failed
from hitl.core.types import User


@transaction.atomic
def case_adjudicate(*, case: Case, actor: User, source_revision: int) -> Annotation:
    """Adopt revision `source_revision` of `case` (a reader's or a consensus revision). 409 when the
    revision does not exist or is not one a reader or STAPLE made."""
    locked = Case.objects.select_for_update(no_key=True).select_related("project").get(pk=case.pk)
    source = locked.annotations.filter(
        revision=source_revision, kind__in=[AnnotationKind.READER, AnnotationKind.CONSENSUS]
    ).first()
    if source is None:
        raise ConflictError(
            "no_such_revision", f"case {case.pk} has no reader or consensus revision {source_revision}"
        )
    png = bytes_load(source.mask_path)
    revision = (locked.annotations.aggregate(m=Max("revision"))["m"] or 0) + 1
    name = f"projects/{locked.project_id}/masks/case-{case.pk}/r{revision:04d}-adjudicated.png"
    with saved_unless_failed(name, png) as path:
        annotation = Annotation.objects.create(
            case=locked,
            revision=revision,
            kind=AnnotationKind.ADJUDICATED,
            author=actor,
            base=source,
            mask_path=path,
            mask_sha256=source.mask_sha256,
            label_counts=label_counts(mask_from_png(png)),
        )
    Case.objects.filter(pk=case.pk).update(current_annotation=annotation)
    audit_record(
        actor=actor,
        action="case.adjudicate",
        project=locked.project,
        target=annotation,
        details={
            "case_id": case.pk,
            "revision": revision,
            "adopted_revision": source_revision,
            "kind": source.kind,
        },
    )
    return annotation
