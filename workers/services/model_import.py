"""Import a MONAI bundle as a model version (issue 18, item 2). The web process checks the zip
(workers.ml.models.bundle_check: no torch, nothing evaluated) and that its network fits the project (input
channels, one output per label value up to the largest); a bundle that passes is stored and becomes a
training run with trigger "bundle" on the train queue. The worker (workers.services.training_run) builds the
network from the checked definition, loads the weights with weights_only=True, measures it on the project's
validation cases and registers it through gating like any trained version. Only ML engineers and admins
import (the API checks Action.TRAIN); a refused bundle leaves nothing behind."""

import hashlib

from django.conf import settings
from django.db import transaction

from annotations.models import Project
from hitl.core.audit import audit_record
from hitl.core.errors import DomainError
from hitl.core.storage import bytes_save, delete_quietly
from hitl.core.types import User
from workers.ml.models.bundle_check import BundleRejected, CheckedBundle, check_bundle
from workers.ml.models.checkpoint_format import BUNDLE_BACKEND
from workers.ml.models.config import NetworkConfig
from workers.models import TrainingRun
from workers.services import training as training_service
from workers.services.training_config import in_channels_for, num_classes_for, training_config_build


class BundleError(DomainError):
    status = 400
    field = "file"


def model_bundle_import(*, project: Project, data: bytes, actor: User) -> TrainingRun:
    """Check, store and queue the bundle's import; returns its run (trigger "bundle"). BundleError (400)
    for a bundle that is refused, ConflictError("run_open") while the project has a run open."""
    try:
        checked = check_bundle(data, max_uncompressed=settings.HITL_MAX_UNCOMPRESSED_BYTES)
    except BundleRejected as exc:
        raise BundleError(exc.code, str(exc)) from None
    _check_fits(project, checked)
    training_service.run_open_refuse(project)
    digest = hashlib.sha256(data).hexdigest()
    path = bytes_save(f"projects/{project.pk}/bundles/{digest[:16]}.zip", data)
    try:
        return _queue(project, checked, path, digest, actor)
    except Exception:
        delete_quietly([path])
        raise


def _check_fits(project: Project, checked: CheckedBundle) -> None:
    classes, channels = num_classes_for(project), in_channels_for(project)
    if checked.out_channels != classes:
        raise BundleError(
            "label_mismatch",
            f"the bundle's network has {checked.out_channels} output channels; this project needs {classes}"
            f" (background and label values 1..{classes - 1})",
        )
    if checked.in_channels != channels:
        raise BundleError(
            "channel_mismatch",
            f"the bundle's network reads {checked.in_channels} input channel(s); this project's images have"
            f" {channels}",
        )


@transaction.atomic
def _queue(project: Project, checked: CheckedBundle, path: str, digest: str, actor: User) -> TrainingRun:
    config = training_config_build(project=project, overrides={}, seed=0)
    network = NetworkConfig(
        in_channels=checked.in_channels,
        num_classes=checked.out_channels,
        channels=(),
        dropout=0.0,
        arch=BUNDLE_BACKEND,
    )
    target = checked.network_def["_target_"]
    config |= {
        "backend": BUNDLE_BACKEND,
        "bundle": {
            "path": path,
            "sha256": digest,
            "name": checked.name,
            "version": checked.version,
            "network_def": checked.network_def,
            "label_names": {str(k): v for k, v in checked.label_names.items()},
            "has_train_config": checked.has_train_config,
        },
        "network": network.to_dict(),
        "input": {"context_slices": 1, "context_mm": None, "channels_per_slice": checked.in_channels},
        "explain_methods": ["gradcam", "saliency"],  # Grad-CAM at the layer before the head (networks.py)
        "warm_start": False,
    }
    run = training_service.run_queue(
        project=project, trigger="bundle", requested_by=actor, config=config, seed=0
    )
    audit_record(
        actor=actor,
        action="model_bundle.import",
        project=project,
        target=run,
        details={"bundle": checked.name, "version": checked.version, "sha256": digest, "network": target},
    )
    return run
