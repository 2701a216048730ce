"""From the database to numpy: the labelled sets a training run uses and the images a model scores.

Label policy "latest": a case's label is its current annotation (Case.current_annotation), whatever its kind.
The exact revisions used are returned so a run can record them (reproducibility).
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from django.db.models import QuerySet

from annotations.models import Case, CaseSplit, Image, Project
from annotations.storage import array_load, bytes_load, mask_from_png
from workers.ml.transforms import prepare_image

TRAIN_SPLITS = (CaseSplit.POOL, CaseSplit.TRAIN)


@dataclass
class LabelledSet:
    """Parallel lists: prepared float32 (C, H, W) images, (H, W) uint8 masks, their case and revision ids."""

    case_ids: list[int] = field(default_factory=list)
    revision_ids: list[int] = field(default_factory=list)
    images: list[np.ndarray] = field(default_factory=list)
    masks: list[np.ndarray] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.case_ids)


@dataclass
class TrainingSets:
    train: LabelledSet
    validation: LabelledSet
    test: LabelledSet


def num_classes_for(project: Project) -> int:
    """Background plus every label value up to the project's largest one."""
    return max(project.label_values()) + 1


def in_channels_for(project: Project) -> int:
    """3 when the project holds RGB images (S, H, W, 3), else 1."""
    shape = Image.objects.filter(project=project).values_list("shape", flat=True).first()
    return 3 if shape is not None and len(shape) == 4 else 1


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
            reads_taken__lt=project.readers_per_case,
        )
        .select_related("image")
        .order_by("id")
    )


class SliceLoader:
    """Loads case slices, reading each image's array from storage once per loader."""

    def __init__(self) -> None:
        self._arrays: dict[int, np.ndarray] = {}

    def raw(self, case: Case) -> np.ndarray:
        image = case.image
        if image.pk not in self._arrays:
            self._arrays[image.pk] = array_load(image.pixels_path)
        return self._arrays[image.pk][case.slice_index]

    def prepared(self, case: Case) -> np.ndarray:
        return prepare_image(self.raw(case), case.image.modality)


def load_images(cases: Iterable[Case], loader: SliceLoader | None = None) -> list[np.ndarray]:
    """Prepared float32 (C, H, W) images of `cases` (which need `image` joined), in order."""
    loader = loader or SliceLoader()
    return [loader.prepared(c) for c in cases]


def load_mask(case: Case, num_classes: int) -> np.ndarray:
    """The case's current mask; label values the network does not know (>= num_classes) become 0."""
    mask = mask_from_png(bytes_load(case.current_annotation.mask_path))
    return np.where(mask < num_classes, mask, 0).astype(np.uint8)


def labelled_set_build(*, project: Project, splits: Sequence[str], num_classes: int) -> LabelledSet:
    out = LabelledSet()
    loader = SliceLoader()
    for case in labelled_cases(project=project, splits=splits):
        out.case_ids.append(case.pk)
        out.revision_ids.append(case.current_annotation_id)
        out.images.append(loader.prepared(case))
        out.masks.append(load_mask(case, num_classes))
    return out


def training_sets_build(*, project: Project) -> TrainingSets:
    """train = pool/train cases with a label, validation and test = their splits' labelled cases."""
    k = num_classes_for(project)
    return TrainingSets(
        train=labelled_set_build(project=project, splits=TRAIN_SPLITS, num_classes=k),
        validation=labelled_set_build(project=project, splits=[CaseSplit.VALIDATION], num_classes=k),
        test=labelled_set_build(project=project, splits=[CaseSplit.TEST], num_classes=k),
    )
