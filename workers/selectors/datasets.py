"""Reads of the labelled data: the labelled and open cases of a project and a case's current mask (numpy,
no torch: the web process uses them too)."""

from collections.abc import Sequence

import numpy as np
from django.db.models import QuerySet

from annotations.models import Annotation, Case, CaseSplit, Project
from annotations.selectors.reading_policy import readers_wanted
from hitl.core.storage import bytes_load, mask_from_png


def labelled_cases(*, project: Project, splits: Sequence[str]) -> QuerySet[Case]:
    """Cases of `splits` with a current annotation, with their image and annotation joined."""
    return (
        Case.objects.filter(project=project, split__in=splits, current_annotation__isnull=False)
        .select_related("image", "current_annotation")
        .order_by("id")
    )


def open_pool_cases(*, project: Project) -> QuerySet[Case]:
    """Pool cases still open for reading (reading slots left, not flagged): what scoring ranks."""
    return (
        Case.objects.filter(
            project=project,
            split=CaseSplit.POOL,
            flagged_at__isnull=True,
            reads_taken__lt=readers_wanted(project),
        )
        .select_related("image")
        .order_by("id")
    )


def queue_head_ids(*, project_id: int, n: int) -> list[int]:
    """The first `n` open pool cases in reading order (highest priority first): what readers claim next."""
    project = Project.objects.get(pk=project_id)
    return list(open_pool_cases(project=project).order_by("-priority", "id").values_list("pk", flat=True)[:n])


def known_labels(mask: np.ndarray, num_classes: int) -> np.ndarray:
    """Label values the network does not know (>= num_classes) become 0."""
    return np.where(mask < num_classes, mask, 0).astype(np.uint8)


def current_revision(case: Case) -> Annotation:
    """The case's current revision; training and export only ever select cases that have one."""
    if case.current_annotation is None:
        raise ValueError(f"case {case.pk} has no annotation")
    return case.current_annotation


def load_mask(case: Case, num_classes: int) -> np.ndarray:
    """The case's current mask, with unknown labels set to 0."""
    return known_labels(mask_from_png(bytes_load(current_revision(case).mask_path)), num_classes)
