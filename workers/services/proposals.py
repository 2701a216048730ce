"""What the reader sees next to the image: the active model's proposed mask, its uncertainty map, and
explanation heatmaps. All are PNGs on the storage backend with one row each; rows of older versions stay
(the selectors report them stale). Work for a version that is no longer active is dropped."""

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from django.db import IntegrityError, transaction

from annotations.models import Case
from hitl.core.storage import bytes_save, mask_to_png
from workers.ml.backends import ModelBackend, backend_for
from workers.ml.explain.explanations import explain, map_to_png, methods_for_arch
from workers.ml.explain.policy import DEFAULT_METHODS, GRADIENT_FREE_METHODS
from workers.ml.models.device import limit_cpu_threads
from workers.models import Explanation, ModelVersion, Prediction, VersionState
from workers.services.datasets import load_images, loader_for
from workers.services.weights import model_load

log = logging.getLogger(__name__)


def _active(version_id: int) -> ModelVersion | None:
    version = ModelVersion.objects.filter(pk=version_id).first()
    return version if version is not None and version.state == VersionState.ACTIVE else None


def _cases(version: ModelVersion, case_ids: Sequence[int]) -> list[Case]:
    return list(
        Case.objects.filter(project_id=version.project_id, pk__in=case_ids)
        .select_related("image")
        .order_by("id")
    )


def _prefix(version: ModelVersion) -> str:
    return f"projects/{version.project_id}/models/v{version.number}-{version.pk}"


def proposals_compute(*, version_id: int, case_ids: Sequence[int]) -> int:
    """Proposed mask (arg-max) and uncertainty map (entropy / ln K of the backend's predictive samples: MC
    dropout, or mirror TTA) for the cases that lack a Prediction of this version. Returns the number
    written. Idempotent."""
    version = _active(version_id)
    if version is None:
        return 0
    done = set(
        Prediction.objects.filter(model_version=version, case_id__in=case_ids).values_list(
            "case_id", flat=True
        )
    )
    cases = [c for c in _cases(version, case_ids) if c.pk not in done]
    if not cases:
        return 0
    limit_cpu_threads()
    model, backend = model_load(version), backend_for(version.config)
    images = load_images(cases, loader_for(version.config))
    labels = _labels(backend, model, images)
    mc = int(version.config.get("scoring", {}).get("mc_samples", 5))
    maps = backend.score(model, images, samples=mc).uncertainty_maps
    written = 0
    for case, label, umap in zip(cases, labels, maps, strict=True):
        mask_path = bytes_save(f"{_prefix(version)}/proposals/case-{case.pk}-mask.png", mask_to_png(label))
        unc_path = bytes_save(
            f"{_prefix(version)}/proposals/case-{case.pk}-uncertainty.png", map_to_png(umap)
        )
        written += _create_once(
            Prediction, case=case, model_version=version, mask_path=mask_path, uncertainty_path=unc_path
        )
    return written


def _labels(backend: ModelBackend, model, images: Sequence[np.ndarray]) -> list[np.ndarray]:
    return [p.argmax(axis=0).astype(np.uint8) for p in backend.predict_proba(model, images)]


def _create_once(model_cls, **fields) -> int:
    """Insert one row; a duplicate (a concurrent redelivery got there first) is fine."""
    try:
        with transaction.atomic():
            model_cls.objects.create(**fields)
        return 1
    except IntegrityError:
        return 0


def _target_class(label: np.ndarray, num_classes: int) -> int:
    """The foreground class with the largest predicted area (1 when nothing is predicted)."""
    counts = np.bincount(label.ravel(), minlength=num_classes)[1:]
    return int(np.argmax(counts)) + 1 if counts.sum() else 1


def explanations_compute(
    *, version_id: int, case_ids: Sequence[int], methods: Sequence[str] | None = None
) -> int:
    """Explanation heatmaps (default: DEFAULT_METHODS, the cheap gradcam + saliency) for the cases and methods that lack one
    for this version, explaining the class the model predicts most of. Returns the number written."""
    methods = list(methods or DEFAULT_METHODS)
    version = _active(version_id)
    if version is None:
        return 0
    backend = backend_for(version.config)
    unknown = [m for m in methods if m not in methods_for_arch(version.arch)]
    if not backend.capabilities.gradient_explanations:
        unknown += [m for m in methods if m not in GRADIENT_FREE_METHODS and m not in unknown]
    if unknown:
        raise ValueError(
            f"explanation methods {unknown} cannot explain a {version.arch} model of the {backend.name} backend"
        )
    done = set(
        Explanation.objects.filter(model_version=version, case_id__in=case_ids).values_list(
            "case_id", "method"
        )
    )
    todo = [(c, [m for m in methods if (c.pk, m) not in done]) for c in _cases(version, case_ids)]
    todo = [(c, ms) for c, ms in todo if ms]
    if not todo:
        return 0
    limit_cpu_threads()
    model = model_load(version)
    num_classes = int(version.config["network"]["num_classes"])
    loader = loader_for(version.config)
    written = 0
    for case, missing in todo:
        image = loader.prepared(case)
        target = _target_class(_labels(backend, model, [image])[0], num_classes)
        for method in missing:
            t0 = time.perf_counter()
            params: dict[str, Any] = {"layer": backend.explain_layer(model)} if method == "gradcam" else {}
            result = explain(model, image, method, target_class=target, **params)
            path = bytes_save(
                f"{_prefix(version)}/explanations/case-{case.pk}-{method}.png", map_to_png(result.map)
            )
            written += _create_once(
                Explanation,
                case=case,
                model_version=version,
                method=method,
                map_path=path,
                params=result.params,
                cost_forward_units=float(result.cost_forward_units),
                seconds=float(time.perf_counter() - t0),
            )
    return written
