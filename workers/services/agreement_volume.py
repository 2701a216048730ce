"""Agreement in 3D (issue 19): how much the readers of a volume agree over the slices they all labelled,
with distances in millimetres on the volume's own spacing (slice spacing from the image's geometry) and
STAPLE on the volume.

Inputs: each reader's latest revision of every slice of the image. The measured block is the longest run
of consecutive slices that every reader (two or more) labelled: surface distances need neighbouring
slices, so a gap would join surfaces that are not neighbours. The readers' label volumes are cropped to the
bounding box of everything any of them labelled (plus one voxel): surface distances, Dice and STAPLE's
sensitivity are unchanged by it, while kappa and STAPLE's specificity count background voxels of that box
only (stated in the result). Computed on request, never stored: it changes with every submission."""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

import numpy as np

from annotations.models import Annotation, AnnotationKind, Image
from hitl.core.storage import bytes_load, mask_from_png
from workers.ml.agreement.metrics import case_agreement
from workers.ml.agreement.surface import crop_box
from workers.services.exports.common import reader_pseudonym


def volume_spacing(image: Image) -> tuple[float, float, float]:
    """(slice, row, column) mm: the length of each array axis's step in the image's geometry, else its
    recorded spacing."""
    if image.affine:
        steps = np.linalg.norm(np.asarray(image.affine, dtype=np.float64)[:3, :3], axis=0)
        return float(steps[0]), float(steps[1]), float(steps[2])
    row_mm, col_mm, slice_mm = (float(v) for v in image.spacing)
    return slice_mm, row_mm, col_mm


def _latest_by_reader(image: Image) -> dict[int, dict[int, Annotation]]:
    """reader id -> slice index -> that reader's latest revision of the slice."""
    latest: dict[int, dict[int, Annotation]] = defaultdict(dict)
    revisions = (
        Annotation.objects.filter(case__image=image, kind=AnnotationKind.READER, author__isnull=False)
        .select_related("case")
        .order_by("-revision", "-id")
    )
    for ann in revisions:
        if ann.author_id is not None:  # always, by the filter; for the type checker
            latest[ann.author_id].setdefault(ann.case.slice_index, ann)
    return latest


def longest_run(indices: set[int]) -> tuple[int, int] | None:
    """(first, last) of the longest run of consecutive integers in `indices` (the lowest on a tie)."""
    best: tuple[int, int] | None = None
    for start in sorted(i for i in indices if i - 1 not in indices):
        end = start
        while end + 1 in indices:
            end += 1
        if best is None or end - start > best[1] - best[0]:
            best = (start, end)
    return best


def volume_agreement(*, image: Image) -> dict[str, Any] | None:
    """The readers' 3D agreement on `image` (see the module docstring); None with fewer than two readers
    who share a labelled slice."""
    latest = _latest_by_reader(image)
    readers = sorted(r for r in latest if latest[r])
    shared = set.intersection(*(set(latest[r]) for r in readers)) if len(readers) >= 2 else set()
    run = longest_run(shared)
    if run is None:
        return None
    t0 = time.perf_counter()
    first, last = run
    volumes = [
        np.stack([mask_from_png(bytes_load(latest[r][k].mask_path)) for k in range(first, last + 1)])
        for r in readers
    ]
    box = crop_box([v > 0 for v in volumes]) or tuple(slice(0, n) for n in volumes[0].shape)
    spacing = volume_spacing(image)
    result = case_agreement([v[box] for v in volumes], spacing)
    return {
        "image": image.pk,
        "readers": [
            reader_pseudonym(image.project, r) for r in readers
        ],  # in the order of the metrics' indices
        "slices": [first, last],
        "shared_slices": len(shared),
        "spacing_mm": list(spacing),
        "box": [
            [s.start + (first if axis == 0 else 0), s.stop + (first if axis == 0 else 0)]
            for axis, s in enumerate(box)
        ],
        "background_counted": "within the box",
        "metrics": result.to_dict(),
        "seconds": round(time.perf_counter() - t0, 3),
    }
