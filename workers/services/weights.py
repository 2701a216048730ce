"""A model version's weights: its checkpoint bytes (hash-checked) and the network built from them. The
network (torch) is built by workers only (training, scoring, proposals, explanations); the web process reads
the bytes alone (a bundle download), so torch is imported inside the functions that need it."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from django.conf import settings

from hitl.core.storage import bytes_load
from workers.ml.models.config import NetworkConfig
from workers.models import ModelVersion

if TYPE_CHECKING:
    import torch


def weights_bytes(version: ModelVersion) -> bytes:
    """The version's checkpoint bytes, checked against the recorded SHA-256."""
    data = bytes_load(version.weights_path)
    if hashlib.sha256(data).hexdigest() != version.weights_sha256:
        raise ValueError(f"weights of model version {version.pk} do not match their recorded hash")
    return data


def model_load(version: ModelVersion) -> torch.nn.Module:
    """The version's network on the CPU in eval mode."""
    from workers.ml.models.checkpoint import checkpoint_from_bytes

    model, _cfg, _meta = checkpoint_from_bytes(weights_bytes(version))
    return model


def bundle_model_build(bundle: dict, net_cfg: NetworkConfig) -> torch.nn.Module:
    """The network of an imported MONAI bundle (a run's config["bundle"], workers.services.model_import):
    its stored zip checked again (hash and contents), the network built from the checked definition, its
    weights loaded with weights_only=True, its input size divisor measured and its outputs checked.
    Raises BundleRejected with the reason."""
    from workers.ml.models.bundle_check import BundleRejected, check_bundle
    from workers.ml.models.bundle_network import (
        build_bundle_network,
        check_outputs,
        load_bundle_weights,
        size_divisor,
        with_size_divisor,
    )

    data = bytes_load(bundle["path"])
    if hashlib.sha256(data).hexdigest() != bundle["sha256"]:
        raise BundleRejected("bad_weights", "the stored bundle does not match its recorded hash")
    checked = check_bundle(data, max_uncompressed=settings.HITL_MAX_UNCOMPRESSED_BYTES)
    model = build_bundle_network(checked.network_def)
    load_bundle_weights(model, checked.weights)
    divisor = size_divisor(model, net_cfg.in_channels)
    check_outputs(model, net_cfg.in_channels, net_cfg.num_classes, divisor)
    return with_size_divisor(model, divisor)
