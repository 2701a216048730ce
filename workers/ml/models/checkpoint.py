"""Model checkpoints as bytes: a zip holding ``weights.pt`` (a state_dict) and ``config.json``.

Contracts:
- ``config.json`` is ``{"format": 1, "network": NetworkConfig.to_dict(), "meta": meta}``; ``meta`` must be
  JSON-serialisable (it is stored as JSON, never pickled).
- Weights are written with ``torch.save(state_dict)`` and read with ``torch.load(weights_only=True)``, so a
  checkpoint can never execute code or build arbitrary objects on load; anything but tensors and
  plain containers is rejected (``pickle.UnpicklingError``).
- A round trip is bit-exact: every tensor of the state_dict comes back with equal dtype, shape and bits.
- Loading builds the network from the stored config and loads the weights strictly (missing or extra
  keys raise); the model comes back on the CPU in eval mode.
"""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import torch
from torch import nn

from workers.ml.models.bundle_network import build_bundle_network, with_size_divisor
from workers.ml.models.checkpoint_format import (
    BUNDLE_BACKEND,
    CONFIG_NAME,
    FORMAT_VERSION,
    NNUNET_BACKEND,
    WEIGHTS_NAME,
    checkpoint_parts,
)
from workers.ml.models.inference import network_divisor
from workers.ml.models.networks import NetworkConfig, build_network


def checkpoint_to_bytes(
    model: nn.Module,
    net_cfg: NetworkConfig,
    meta: dict[str, Any] | None = None,
    *,
    network_def: dict[str, Any] | None = None,
    nnunet: dict[str, Any] | None = None,
) -> bytes:
    """Serialise weights (moved to CPU) + config + meta into zip bytes. `network_def`: the network is an
    imported MONAI bundle's (built from that checked definition, not from `net_cfg`; its input size divisor
    is stored too). `nnunet`: {"plans", "dataset"} of an nnU-Net v2 network (workers.ml.models.nnunet_network),
    which the network and its normalisation are built from."""
    content: dict[str, Any] = {"format": FORMAT_VERSION, "network": net_cfg.to_dict(), "meta": meta or {}}
    if network_def is not None:
        content |= {
            "backend": BUNDLE_BACKEND,
            "network_def": network_def,
            "size_divisor": network_divisor(model),
        }
    if nnunet is not None:
        content |= {
            "backend": NNUNET_BACKEND,
            "nnunet": {"plans": nnunet["plans"], "dataset": nnunet["dataset"]},
        }
    config = json.dumps(content, sort_keys=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    weights = io.BytesIO()
    torch.save(state, weights)
    buf = io.BytesIO()
    # Stored, not deflated: float weights barely compress and storing keeps saving fast.
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr(CONFIG_NAME, config)
        zf.writestr(WEIGHTS_NAME, weights.getvalue())
    return buf.getvalue()


def read_checkpoint(data: bytes) -> tuple[dict[str, torch.Tensor], NetworkConfig, dict[str, Any]]:
    """(state_dict, net_cfg, meta) without building a network. Raises ValueError on a malformed file."""
    state, config = _read(data)
    return state, NetworkConfig.from_dict(config["network"]), config.get("meta", {})


def _read(data: bytes) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    config, weights = checkpoint_parts(data)
    state = torch.load(io.BytesIO(weights), map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError("weights.pt does not hold a state_dict of tensors")
    return state, config


def checkpoint_from_bytes(data: bytes) -> tuple[nn.Module, NetworkConfig, dict[str, Any]]:
    """Inverse of `checkpoint_to_bytes`: (model on CPU in eval mode, net_cfg, meta)."""
    state, config = _read(data)
    net_cfg = NetworkConfig.from_dict(config["network"])
    if config.get("backend") == BUNDLE_BACKEND:
        model = build_bundle_network(config["network_def"])  # the allow-list is checked again here
        with_size_divisor(model, int(config["size_divisor"]))
    elif config.get("backend") == NNUNET_BACKEND:
        from workers.ml.models.nnunet_network import NnunetNetwork

        model = NnunetNetwork(config["nnunet"]["plans"], config["nnunet"]["dataset"])
    else:
        model = build_network(net_cfg)
    model.load_state_dict(state, strict=True)
    model.eval()
    return model, net_cfg, config.get("meta", {})
