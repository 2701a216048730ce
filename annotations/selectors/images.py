from django.db.models import Count, Prefetch, QuerySet

from annotations.models import Annotation, Case, Image, Project
from annotations.permissions import project_object_for_user
from annotations.services.reading_policy import readers_wanted


def image_list(*, project: Project) -> QuerySet[Image]:
    return project.images.annotate(num_cases=Count("cases")).order_by("id")


def case_list(*, project: Project, split: str | None = None, image_id: int | None = None) -> QuerySet[Case]:
    qs = project.cases.select_related("image", "current_annotation")
    if split:
        qs = qs.filter(split=split)
    if image_id:
        qs = qs.filter(image_id=image_id)
    return qs.order_by("id")


def case_get_for_user(*, user, case_id: int, annotations: bool = True) -> tuple[Case, set[str]]:
    """A case and the caller's roles in its project; 404 for non-members. `annotations=False` skips
    prefetching the revision history (one query) for the hot paths that do not show it (lease actions,
    submission, the editor's layers)."""
    qs = Case.objects.select_related("image", "project", "current_annotation")
    if annotations:
        qs = qs.prefetch_related(Prefetch("annotations", queryset=Annotation.objects.order_by("revision")))
    return project_object_for_user(qs.filter(pk=case_id).first(), user=user, what="case")


def queue_head(*, project: Project, limit: int = 20) -> QuerySet[Case]:
    """The next cases readers will be offered (pool, open slots, not flagged), in queue order."""
    return (
        project.cases.filter(split="pool", flagged_at=None, reads_taken__lt=readers_wanted(project))
        .select_related("image")
        .order_by("-priority", "id")[:limit]
    )
