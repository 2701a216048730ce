"""What the editor needs to open a case, in one call (plus binary fetches for pixels and layers)."""

from typing import Any

from rest_framework.exceptions import NotFound

from annotations.models import Annotation, AnnotationKind, Assignment, AssignmentStatus, Case, Role
from annotations.selectors.images import case_get_for_user
from annotations.selectors.reading_policy import case_readers
from hitl.core.permissions import Action, reads_blind, require
from hitl.core.types import User
from workers.selectors.registry import case_ml_payload


def visible_head(*, case: Case, reader: User) -> Annotation | None:
    """The revision a reader builds on: the case's current one when the case has one reader; with several
    readers each reads blind, so it is the reader's own latest revision."""
    if case_readers(project=case.project, case=case) == 1:
        return case.current_annotation
    return case.annotations.filter(author=reader, kind=AnnotationKind.READER).order_by("-revision").first()


def case_get_for_viewer(*, user: User, case_id: int) -> tuple[Case, set[str]]:
    """The case and the caller's roles, for anyone who may view it: a member of its project, and for a
    blind reader only a case the queue gave them (404 otherwise, so ids never leak)."""
    case, roles = case_get_for_user(user=user, case_id=case_id, annotations=False)
    require(roles, Action.VIEW)
    require_case_access(user=user, roles=roles, case=case)
    return case, roles


def require_case_access(*, user: User, roles: set[str], case: Case) -> None:
    """Readers read blind: a user who is only an annotator sees a case only after the queue gave it to
    them. Other roles see every case of their project."""
    if reads_blind(roles) and not Assignment.objects.filter(case=case, reader=user).exists():
        raise NotFound("case not found")


def annotation_visible(*, user: User, roles: set[str], annotation: Annotation) -> bool:
    """Other roles see every revision; an annotator sees their own, and the revision the editor gives them
    to build on (e.g. an imported reference on a one-reader case they were given by the queue)."""
    if roles - {Role.ANNOTATOR} or annotation.author_id == user.pk:
        return True
    case = annotation.case
    if not Assignment.objects.filter(case=case, reader=user).exists():
        return False
    head = visible_head(case=case, reader=user)
    return head is not None and head.pk == annotation.pk


def editor_payload(*, case: Case, user: User, roles: set[str]) -> dict[str, Any]:
    base = f"/api/v1/cases/{case.pk}"
    lease = Assignment.objects.filter(case=case, reader=user, status=AssignmentStatus.ACTIVE).first()
    head = visible_head(case=case, reader=user)
    ml = case_ml_payload(case)
    image = case.image
    proposal = ml["proposal"]
    return {
        "case": {
            "id": case.pk,
            "image": image.pk,
            "image_name": image.display_name,
            "slice_index": case.slice_index,
            "split": case.split,
            "shape": image.shape[1:3],
            "channels": 3 if image.is_rgb else 1,
            "dtype": image.dtype,
            "modality": image.modality,
            "spacing": image.spacing,
            "window_presets": image.window_presets,
            "pixels_url": f"{base}/pixels",
        },
        "label_classes": case.project.label_classes,
        "lease": {"slot": lease.slot, "expires_at": lease.expires_at} if lease else None,
        "head_revision": head.revision if head else None,
        "head_mask_url": f"/api/v1/annotations/{head.pk}/mask.png" if head else None,
        "model_version": ml["model_version"],
        # The URLs name the version: a browser-cached layer of another version is never shown under this one.
        "proposal": (
            {**_public(proposal), "mask_url": f"{base}/proposal.png?version={proposal['model_version_id']}"}
            if proposal
            else None
        ),
        "uncertainty_url": (
            f"{base}/uncertainty.png?version={proposal['model_version_id']}"
            if proposal and proposal["uncertainty_path"]
            else None
        ),
        "explanations": [
            {**_public(e), "map_url": f"/api/v1/explanations/{e['id']}/map.png"} for e in ml["explanations"]
        ],
        "explain_catalogue": ml["explain_catalogue"],
        "explain_url": f"{base}/explanations",
        "why": (lease.queue_reason if lease and lease.queue_reason else case.queue_reason) or None,
        "score": ml["score"],
    }


def _public(entry: dict[str, Any]) -> dict[str, Any]:
    """Storage paths stay on the server; the client gets URLs."""
    return {k: v for k, v in entry.items() if not k.endswith("_path")}
