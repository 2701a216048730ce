from django.db.models import Count, Prefetch, QuerySet

from annotations.models import Annotation, Assignment, Case, Image, ImportJob, Project
from annotations.selectors.reading_policy import readers_wanted
from hitl.core.permissions import project_object_for_user
from hitl.core.types import User


def image_list(*, project: Project, reader: User | None = None) -> QuerySet[Image]:
    """The project's images; with `reader` (a blind reader), only those holding a case given to them."""
    qs = project.images.annotate(num_cases=Count("cases"))
    if reader is not None:
        qs = qs.filter(
            pk__in=Assignment.objects.filter(project=project, reader=reader).values("case__image_id")
        )
    return qs.order_by("id")


def import_job_list(*, project: Project) -> QuerySet[ImportJob]:
    return project.import_jobs.order_by("-id")


def import_job_get_for_user(*, user: User, import_id: int) -> tuple[ImportJob, set[str]]:
    """An import job and the caller's roles in its project; 404 for non-members."""
    job = ImportJob.objects.select_related("project").filter(pk=import_id).first()
    return project_object_for_user(job, user=user, what="import")


def import_job_images(*, job: ImportJob) -> list[Image]:
    ids = [i for entry in job.files for i in entry.get("image_ids", [])]
    return list(Image.objects.filter(pk__in=ids).annotate(num_cases=Count("cases")).order_by("id"))


def case_list(
    *, project: Project, split: str | None = None, image_id: int | None = None, reader: User | None = None
) -> QuerySet[Case]:
    """The project's cases; with `reader` (a blind reader), only the cases the queue gave them."""
    qs = project.cases.select_related("image", "current_annotation")
    if reader is not None:
        qs = qs.filter(pk__in=Assignment.objects.filter(project=project, reader=reader).values("case_id"))
    if split:
        qs = qs.filter(split=split)
    if image_id:
        qs = qs.filter(image_id=image_id)
    return qs.order_by("id")


def case_get_for_user(*, user: User, case_id: int, annotations: bool = True) -> tuple[Case, set[str]]:
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
