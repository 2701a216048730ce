"""Attention maps of an attention-gated network (`NetworkConfig(arch="attention_unet")`).

Each MONAI AttentionUnet gate multiplies a skip connection by coefficients alpha in [0, 1] (B, 1, h, w),
computed from the skip features and the coarser decoder signal. The map is read from forward hooks on
the gates during one forward pass, each upsampled bilinearly to the image size, and combined.
The gates are class-agnostic: `target_class` does not change the map (recorded as `class_specific`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from workers.ml.explain.core import Context
from workers.ml.explain.methods import MethodResult
from workers.ml.models.networks import attention_gates

COMBINES = ("mean", "product", "finest")


def attention(ctx: Context, *, combine: str = "mean") -> MethodResult:
    """Attention coefficients of every gate (1 forward): "mean" over gates, "product" (where all gates
    attend), or "finest" (the full-resolution gate only). Raises ValueError for models without gates.
    Returned raw in [0, 1]; `explain` still rescales it per image like the other maps."""
    if combine not in COMBINES:
        raise ValueError(f"combine must be one of {COMBINES}, got {combine!r}")
    gates = attention_gates(ctx.model)
    if not gates:
        raise ValueError(
            "the model has no attention gates; build it with NetworkConfig(arch='attention_unet')"
        )
    maps: list[torch.Tensor] = []
    handles = [g.register_forward_hook(lambda _m, _i, out: maps.append(out.detach())) for _, g in gates]
    try:
        with torch.no_grad():
            ctx.model(ctx.x)
    finally:
        for h in handles:
            h.remove()
    size = ctx.x.shape[-2:]
    up = [F.interpolate(a[:1].double(), size=size, mode="bilinear", align_corners=False) for a in maps]
    if combine == "finest":
        # hooks fire in execution order (innermost gate first): pick the largest map, not an index
        raw = up[max(range(len(maps)), key=lambda i: maps[i].numel())]
    elif combine == "product":
        raw = torch.stack(up).prod(dim=0)
    else:
        raw = torch.stack(up).mean(dim=0)
    used = {
        "combine": combine,
        "gates": [name for name, _ in gates],
        "gate_shapes": [list(a.shape[-2:]) for a in maps],
        "class_specific": False,
    }
    return ctx.crop(raw), used
