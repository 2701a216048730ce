"""A model version leaves the service as a MONAI Bundle (workers.ml.models.bundle) that
`python -m monai.bundle run` executes outside it. Built on request from the version's checkpoint (the weight
bytes are copied, never deserialised: no torch in the web process); every download is audited."""

import hashlib
import re
from collections import Counter
from dataclasses import dataclass
from importlib import metadata as dist
from typing import Any

from annotations.models import Image
from hitl.core.audit import audit_record
from hitl.core.errors import ConflictError
from hitl.core.types import User
from workers.ml.models.bundle import BundleError, BundleSpec, bundle_zip
from workers.ml.models.checkpoint_format import BUNDLE_BACKEND, NNUNET_BACKEND, checkpoint_parts
from workers.ml.models.config import NetworkConfig
from workers.models import ModelVersion, TrainingRun
from workers.services.training_config import context_of
from workers.services.weights import weights_bytes

# The metrics a reader of the bundle needs to judge it; the rest (per-case figures) stays in the service.
PROVENANCE_METRICS = (
    "validation_dice",
    "test_dice",
    "dice_metric",
    "labelled_cases",
    "validation_cases",
    "test_cases",
    "best_epoch",
    "epochs_run",
    "seed",
)


@dataclass(frozen=True)
class Bundle:
    filename: str
    data: bytes


def label_names(label_classes: list[dict[str, Any]], num_classes: int) -> list[str]:
    """Output channel i -> its name: background, the project's class of value i, or "unused" for a value no
    class has (values may be sparse: 1, 2, 5)."""
    by_value = {int(c["value"]): str(c["name"]) for c in label_classes}
    return ["background", *(by_value.get(i, f"unused {i}") for i in range(1, num_classes))]


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:40] or "model"


def model_version_bundle(*, version: ModelVersion, actor: User) -> Bundle:
    """The version as a bundle zip. ConflictError("not_exportable") when it cannot be one (an RGB model);
    ValueError when its checkpoint does not match its recorded hash (a damaged file is never served)."""
    config, weights_pt = checkpoint_parts(weights_bytes(version))
    if config.get("backend") == NNUNET_BACKEND:
        raise ConflictError(
            "not_exportable", "an nnU-Net version is not a MONAI network; it cannot be a bundle"
        )
    net = NetworkConfig.from_dict(config["network"])
    project = version.project
    context, context_mm = context_of(version.config)
    name = f"{_slug(project.name)}_v{version.number}"
    modality = _modality(version)
    spec = BundleSpec(
        name=name,
        version=f"1.{version.number}.0",
        description=(
            f"Segmentation of {', '.join(c['name'] for c in project.label_classes)} on {modality}"
            f" slices: model version {version.number} of project {project.pk} of the HITL annotation service."
        ),
        net=net,
        modality=modality,
        label_names=label_names(project.label_classes, net.num_classes),
        context=context,
        context_mm=context_mm,
        provenance=_provenance(version, model_pt_sha256=hashlib.sha256(weights_pt).hexdigest()),
        network_def=config.get("network_def") if config.get("backend") == BUNDLE_BACKEND else None,
        size_divisor=config.get("size_divisor"),
    )
    try:
        data = bundle_zip(weights_pt, spec)
    except BundleError as exc:
        raise ConflictError("not_exportable", str(exc)) from exc
    audit_record(
        actor=actor,
        action="model_version.bundle_export",
        project=project,
        target=version,
        details={"weights_sha256": version.weights_sha256},
    )
    return Bundle(f"{name}.zip", data)


def _modality(version: ModelVersion) -> str:
    """The modality the version's input was prepared for: that of the project's images (preparation reads
    each image's own, workers.services.datasets), the most common one when they differ."""
    rows = Counter(Image.objects.filter(project_id=version.project_id).values_list("modality", flat=True))
    return rows.most_common(1)[0][0] if rows else version.project.modality


def _provenance(version: ModelVersion, *, model_pt_sha256: str) -> dict[str, Any]:
    run = TrainingRun.objects.filter(result_version=version).only("pk", "seed", "label_policy").first()
    return {
        "service": "hitl-annotation",
        "service_version": _version("hitl-seg"),
        "project_id": version.project_id,
        "model_version": version.number,
        "model_version_id": version.pk,
        "state": version.state,
        "created_at": version.created_at.isoformat(),
        "promoted_at": version.promoted_at.isoformat() if version.promoted_at else None,
        "checkpoint_sha256": version.weights_sha256,
        "model_pt_sha256": model_pt_sha256,
        "training_run_id": run.pk if run else None,
        "label_policy": run.label_policy if run else None,
        "metrics": {k: version.metrics.get(k) for k in PROVENANCE_METRICS if k in version.metrics},
        "network": version.config.get("network"),
        "input": version.config.get("input", {}),
    }


def _version(distribution: str) -> str:
    try:
        return dist.version(distribution)
    except dist.PackageNotFoundError:
        return "unknown"
