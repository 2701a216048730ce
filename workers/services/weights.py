"""A model version's weights: its checkpoint bytes (hash-checked) and the network built from them. The
network (torch) is built by workers only (training, scoring, proposals, explanations); the web process reads
the bytes alone (a bundle download), so torch is imported inside the functions that need it."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from hitl.core.storage import bytes_load
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


def model_state_load(version: ModelVersion) -> dict[str, torch.Tensor]:
    from workers.ml.models.checkpoint import read_checkpoint

    state, _cfg, _meta = read_checkpoint(weights_bytes(version))
    return state
