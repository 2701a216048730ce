"""Build the network of an imported MONAI bundle from its checked, literal `network_def`
(`bundle_check.check_bundle`) and load its weights without running any of its code.

- The definition is instantiated with `monai.bundle.ConfigParser` (the issue's contract); it holds only
  literals and allow-listed `_target_`s, so the parser imports a monai network class and calls it.
- Weights: `torch.load(weights_only=True)`, a state_dict of tensors, or MONAI's CheckpointSaver dict with the
  state_dict under "model"/"network"/"state_dict"; loaded strictly (every key, every shape).
- `size_divisor`: the smallest power of two the network's input sides must be a multiple of (found by
  running it on small inputs), so inference pads like it does for the built-in U-Net.
- `check_outputs`: one forward pass on a zero image; the output must be (1, K, H, W) logits.
Raises `BundleRejected` (from bundle_check) with a code and a message a user can act on.
"""

from __future__ import annotations

import importlib
import io
import pickle
from typing import Any

import torch
from torch import nn

from workers.ml.models.bundle_check import NESTED_TARGETS, NETWORKS, BundleRejected, walk

_STATE_KEYS = ("model", "network", "state_dict", "net")
MAX_DIVISOR = 128


def build_bundle_network(network_def: dict[str, Any]) -> nn.Module:
    """The network, on the CPU in eval mode, with freshly initialised weights."""
    from monai.bundle import ConfigParser

    target = str(network_def.get("_target_", ""))
    nested = [
        str(v) for k, v in walk({k: v for k, v in network_def.items() if k != "_target_"}) if k == "_target_"
    ]
    if not target.startswith(NETWORKS) or any(not t.startswith(NESTED_TARGETS) for t in nested):
        raise BundleRejected("unsafe_config", "network_def names a component outside monai networks")
    for name in (target, *nested):
        _require_module_class(name)
    try:
        model = ConfigParser({"network_def": network_def}).get_parsed_content("network_def")
    except Exception as exc:  # a class that does not exist, or arguments it does not take
        raise BundleRejected("bad_network", f"network_def does not build: {_short(exc)}") from None
    if not isinstance(model, nn.Module):
        raise BundleRejected("bad_network", "network_def does not build a torch module")
    return model.eval()


def _require_module_class(name: str) -> None:
    """`name` is a torch module class: instantiating it builds layers and calls no function (a function of
    an allowed module, e.g. monai.networks.utils.save_state, could write files)."""
    module_name, _, attr = name.rpartition(".")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError):
        raise BundleRejected("bad_network", f"network_def names {name!r}, which does not exist") from None
    if not (isinstance(obj, type) and issubclass(obj, nn.Module)):
        raise BundleRejected(
            "unsafe_config", f"network_def names {name!r}, which is not a torch module class"
        )


def load_bundle_weights(model: nn.Module, data: bytes) -> None:
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        raise BundleRejected(
            "bad_weights", f"models/model.pt is not a plain state_dict: {_short(exc)}"
        ) from None
    state = _state_dict(obj)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise BundleRejected("bad_weights", f"the weights do not fit network_def: {_short(exc)}") from None
    model.eval()


def _state_dict(obj: Any) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        obj = next((obj[k] for k in _STATE_KEYS if isinstance(obj.get(k), dict)), None)
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise BundleRejected("bad_weights", "models/model.pt does not hold a state_dict of tensors")
    return obj


def size_divisor(model: nn.Module, in_channels: int) -> int:
    """Smallest d (a power of two up to MAX_DIVISOR) such that sides 3d come back unchanged in size."""
    d = 1
    with torch.inference_mode():
        while d <= MAX_DIVISOR:
            side = 3 * d
            try:
                out = model(torch.zeros(1, in_channels, side, side))
                if tuple(out.shape[-2:]) == (side, side):
                    return d
            except (RuntimeError, ValueError):  # sizes that do not line up; a 1x1 map under instance norm
                pass
            d *= 2
    raise BundleRejected("bad_network", f"the network accepts no input side up to {3 * MAX_DIVISOR} pixels")


def with_size_divisor(model: nn.Module, divisor: int) -> nn.Module:
    """Record the divisor on the module (workers.ml.models.inference.network_divisor reads it)."""
    object.__setattr__(model, "size_divisor", int(divisor))
    return model


def check_outputs(model: nn.Module, in_channels: int, out_channels: int, divisor: int) -> None:
    side = max(64, 2 * divisor)
    with torch.inference_mode():
        try:
            out = model(torch.zeros(1, in_channels, side, side))
        except RuntimeError as exc:
            raise BundleRejected(
                "bad_network", f"the network does not run on a {side}x{side} slice: {_short(exc)}"
            ) from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (1, out_channels, side, side):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise BundleRejected(
            "bad_network", f"the network returns {got}, not (1, {out_channels}, {side}, {side}) logits"
        )


def _short(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
