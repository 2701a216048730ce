"""From the database to numpy: the labelled sets a training run uses and the images a model scores.

Label policy (Project.label_policy, recorded in TrainingRun.label_policy): a case read by one reader, or
whose current annotation is an imported reference, trains on its current annotation. A case with two or more
readers (each reader's latest revision counts) trains on
- "consensus": its newest STAPLE consensus revision (written by the agreement task; until that exists, the
  current annotation),
- "majority": the per-pixel majority vote of the readers' latest revisions (computed here),
- "latest": its current annotation (the last submission).
An admin's adjudicated revision (annotations.services.adjudication) settles a multi-read case under every
policy.
The exact revisions used are returned so a run can record them (reproducibility); for a majority vote these
are all the readers' revisions it was voted from.
"""

import hashlib
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from annotations.models import Annotation, AnnotationKind, Case, CaseSplit, LabelPolicy, Project
from hitl.core.storage import array_open, bytes_load, mask_from_png
from workers.ml.agreement.metrics import majority_vote
from workers.ml.models.transforms import context_indices, context_step, prepare_image
from workers.selectors.datasets import current_revision, known_labels, labelled_cases, load_mask
from workers.services.training_config import context_of, num_classes_for

TRAIN_SPLITS = (CaseSplit.POOL, CaseSplit.TRAIN)


@dataclass
class LabelledSet:
    """Parallel lists of prepared float32 (C, H, W) images, (H, W) uint8 masks and case ids; `revision_ids`
    lists every revision the masks came from (one per case, several for a majority vote)."""

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
    label_policy: str = LabelPolicy.LATEST
    validation_source: str = "the validation split"


class SliceLoader:
    """Loads case slices, reading each image's array from storage once per loader. With `context` k > 1
    (2.5D), `prepared` stacks the slice and its k // 2 neighbours on each side of its volume as channels
    (workers.ml.models.transforms.prepare_context), the neighbours about `context_mm` apart (every slice
    when unknown); recently prepared slices are kept for the neighbours."""

    CACHE_SLICES = 64

    def __init__(self, context: int = 1, context_mm: float | None = None) -> None:
        context_indices(0, 1, context)  # validates k
        self.context = context
        self.context_mm = context_mm
        self._arrays: dict[int, np.ndarray] = {}
        self._prepared: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()

    def _array(self, case: Case) -> np.ndarray:
        image = case.image
        if image.pk not in self._arrays:
            self._arrays[image.pk] = array_open(image.pixels_path)  # memory-mapped: only the slices read
        return self._arrays[image.pk]

    def raw(self, case: Case) -> np.ndarray:
        return self._array(case)[case.slice_index]

    def _slice(self, case: Case, z: int) -> np.ndarray:
        key = (case.image_id, z)
        if key in self._prepared:
            self._prepared.move_to_end(key)
        else:
            self._prepared[key] = prepare_image(self._array(case)[z], case.image.modality)
            if len(self._prepared) > self.CACHE_SLICES:
                self._prepared.popitem(last=False)
        return self._prepared[key]

    def prepared(self, case: Case) -> np.ndarray:
        if self.context == 1:
            return prepare_image(self.raw(case), case.image.modality)
        n = self._array(case).shape[0]
        spacing = case.image.spacing or []
        step = context_step(spacing[2] if len(spacing) > 2 else None, self.context_mm)
        zs = context_indices(case.slice_index, n, self.context, step)
        return np.concatenate([self._slice(case, z) for z in zs], axis=0)


def loader_for(config: dict) -> SliceLoader:
    """The loader that prepares images the way a run or version with this config was trained."""
    return SliceLoader(*context_of(config))


def load_images(cases: Iterable[Case], loader: SliceLoader | None = None) -> list[np.ndarray]:
    """Prepared float32 (C, H, W) images of `cases` (which need `image` joined), in order."""
    loader = loader or SliceLoader()
    return [loader.prepared(c) for c in cases]


def labelled_images(case_ids: Sequence[int], *, config: dict) -> list[np.ndarray]:
    """Prepared images of these cases, in this order, as a run or version with `config` reads them (to
    compare another model version on the same cases)."""
    by_id = Case.objects.select_related("image").in_bulk(list(case_ids))
    return load_images([by_id[pk] for pk in case_ids], loader_for(config))


def _multi_reader_revisions(case_ids: list[int]) -> dict[int, tuple[list[Annotation], Annotation | None]]:
    """Per case: each reader's latest revision (by author id) and the revision that settles it: the newest
    adjudicated one, else the newest consensus. One query."""
    out: dict[int, tuple[list[Annotation], Annotation | None]] = {}
    settled = [AnnotationKind.ADJUDICATED, AnnotationKind.CONSENSUS]
    rows = Annotation.objects.filter(
        case_id__in=case_ids, kind__in=[AnnotationKind.READER, *settled]
    ).order_by("case_id", "-revision")
    latest: dict[int, dict[int, Annotation]] = {}
    consensus: dict[int, Annotation] = {}
    for ann in rows.only("id", "case_id", "revision", "kind", "author_id", "mask_path"):
        if ann.kind in settled:
            held = consensus.get(ann.case_id)
            if held is None or (
                held.kind == AnnotationKind.CONSENSUS and ann.kind == AnnotationKind.ADJUDICATED
            ):
                consensus[ann.case_id] = ann
        elif ann.author_id is not None:  # a reader's revision always has its author
            latest.setdefault(ann.case_id, {}).setdefault(ann.author_id, ann)
    for case_id in case_ids:
        by_author = latest.get(case_id, {})
        readers = [by_author[author] for author in sorted(by_author)]
        out[case_id] = (readers, consensus.get(case_id))
    return out


def case_label(
    case: Case, policy: str, readers: list[Annotation], consensus: Annotation | None, num_classes: int
) -> tuple[np.ndarray, list[int]]:
    """The training mask of one case under `policy` and the revision ids it came from. An adjudicated
    revision (`consensus` may be one) settles a multi-read case under every policy."""
    current = current_revision(case)
    if consensus is not None and consensus.kind == AnnotationKind.ADJUDICATED and len(readers) >= 2:
        mask = known_labels(mask_from_png(bytes_load(consensus.mask_path)), num_classes)
        return mask, [consensus.pk]
    if policy == LabelPolicy.LATEST or current.kind == AnnotationKind.REFERENCE or len(readers) < 2:
        return load_mask(case, num_classes), [current.pk]
    if policy == LabelPolicy.MAJORITY:
        masks = [mask_from_png(bytes_load(a.mask_path)) for a in readers]
        return known_labels(majority_vote(masks), num_classes), [a.pk for a in readers]
    if consensus is not None:
        return known_labels(mask_from_png(bytes_load(consensus.mask_path)), num_classes), [consensus.pk]
    return load_mask(case, num_classes), [current.pk]


def labelled_set_build(
    *,
    project: Project,
    splits: Sequence[str],
    num_classes: int,
    label_policy: str = LabelPolicy.LATEST,
    loader: SliceLoader | None = None,
) -> LabelledSet:
    out = LabelledSet()
    loader = loader or SliceLoader()
    cases = list(labelled_cases(project=project, splits=splits))
    revisions = _multi_reader_revisions([c.pk for c in cases])
    for case in cases:
        readers, consensus = revisions.get(case.pk, ([], None))
        mask, used = case_label(case, label_policy, readers, consensus, num_classes)
        out.case_ids.append(case.pk)
        out.revision_ids.extend(used)
        out.images.append(loader.prepared(case))
        out.masks.append(mask)
    return out


def training_sets_build(
    *, project: Project, label_policy: str | None = None, config: dict | None = None
) -> TrainingSets:
    """train = pool/train cases with a label, validation and test = their splits' labelled cases, each
    case's label chosen by `label_policy` (default: the project's), images prepared as the run's `config`
    says (its input context: one slice, or 2.5D)."""
    k = num_classes_for(project)
    policy = label_policy or project.label_policy

    def build(splits: Sequence[str]) -> LabelledSet:
        return labelled_set_build(
            project=project,
            splits=splits,
            num_classes=k,
            label_policy=policy,
            loader=loader_for(config or {}),
        )

    sets = TrainingSets(
        train=build(TRAIN_SPLITS),
        validation=build([CaseSplit.VALIDATION]),
        test=build([CaseSplit.TEST]),
        label_policy=policy,
    )
    if not len(sets.validation) and len(sets.train) >= 2:
        _carve_validation(sets, project_id=project.pk)
    return sets


VALIDATION_SHARE = 0.2  # of the labelled images (or of one volume's slices) carved when no split exists


def _carve_validation(sets: TrainingSets, *, project_id: int) -> None:
    """A project without labelled validation cases validates on a share of its labelled pool: whole images
    (chosen by a hash of project and image id: stable as labels grow, no slice of a validation image in
    training), or with one image only, the last block of its labelled slices (position block, so
    neighbouring slices do not sit on both sides)."""
    rows = {
        pk: (img, z)
        for pk, img, z in Case.objects.filter(pk__in=sets.train.case_ids).values_list(
            "pk", "image_id", "slice_index"
        )
    }
    images = sorted({img for img, _ in rows.values()})
    if len(images) >= 2:
        n = max(1, round(VALIDATION_SHARE * len(images)))
        chosen = set(sorted(images, key=lambda i: hashlib.sha256(f"{project_id}:{i}".encode()).digest())[:n])
        picked = {pk for pk, (img, _) in rows.items() if img in chosen}
        what = f"{len(picked)} labelled cases of {n} of the {len(images)} labelled images"
    else:
        by_z = sorted(rows, key=lambda pk: rows[pk][1])
        picked = set(by_z[-max(1, round(VALIDATION_SHARE * len(by_z))) :])
        what = f"the last {len(picked)} of the {len(by_z)} labelled slices of the one labelled image"
    keep = [i for i, pk in enumerate(sets.train.case_ids) if pk not in picked]
    move = [i for i, pk in enumerate(sets.train.case_ids) if pk in picked]
    # The revisions read stay listed once, with the training set (a run records every revision it read).
    sets.validation = _subset(sets.train, move, revision_ids=[])
    sets.train = _subset(sets.train, keep, revision_ids=sets.train.revision_ids)
    sets.validation_source = f"carved from the labelled pool ({what}): no validation case is labelled"


def _subset(labelled: LabelledSet, idx: list[int], *, revision_ids: list[int]) -> LabelledSet:
    return LabelledSet(
        case_ids=[labelled.case_ids[i] for i in idx],
        revision_ids=list(revision_ids),
        images=[labelled.images[i] for i in idx],
        masks=[labelled.masks[i] for i in idx],
    )
