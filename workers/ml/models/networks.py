"""Segmentation networks (MONAI), described by a JSON-serialisable config.

Contract used by training, inference, scoring and explanations:
- input  ``x``: float tensor (B, in_channels, H, W), H and W divisible by 2**(len(channels)-1)
- output logits: (B, num_classes, H, W); class 0 is background
- ``cam_layer_name(cfg)``: name of a decoder module suited to (Seg-)Grad-CAM
- ``bottleneck_embedding(model, x)``: pooled bottleneck features (B, channels[-1]) for diversity; for a
  network of another layout (an imported MONAI bundle's), the pooled output logits (B, K)
- dropout stays in the network so MC-dropout can enable it at inference

Architectures (``cfg.arch``): "unet" (MONAI UNet, residual units, instance norm) and "attention_unet"
(MONAI AttentionUnet: additive attention gates on every skip connection, whose coefficients in [0, 1] are
exposed as the "attention" explanation; see ``attention_gates``).
"""

from __future__ import annotations

import torch
from monai.networks.nets import AttentionUnet, UNet
from torch import nn

from workers.ml.models.config import ARCHITECTURES, NetworkConfig  # noqa: F401  (re-exported)


def build_network(cfg: NetworkConfig) -> nn.Module:
    if cfg.arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {cfg.arch!r}; choose from {ARCHITECTURES}")
    strides = (2,) * (len(cfg.channels) - 1)
    if cfg.arch == "attention_unet":
        return AttentionUnet(
            spatial_dims=2,
            in_channels=cfg.in_channels,
            out_channels=cfg.num_classes,
            channels=cfg.channels,
            strides=strides,
            dropout=cfg.dropout,
        )
    return UNet(
        spatial_dims=2,
        in_channels=cfg.in_channels,
        out_channels=cfg.num_classes,
        channels=cfg.channels,
        strides=strides,
        num_res_units=cfg.num_res_units,
        dropout=cfg.dropout,
        norm="instance",
    )


def _attention_bottleneck(model: AttentionUnet) -> nn.Module:
    """Walk AttentionUnet's nested AttentionLayers down to the innermost encoder ConvBlock."""
    layer: nn.Module = model.model[1]  # type: ignore[index]
    while isinstance(layer.submodule, nn.Sequential):  # (ConvBlock, deeper AttentionLayer)
        layer = layer.submodule[1]
    return layer.submodule  # type: ignore[return-value]


def _bottleneck(model: nn.Module) -> nn.Module:
    """Walk MONAI UNet's nested SkipConnections down to the innermost (bottleneck) block."""
    if isinstance(model, AttentionUnet):
        return _attention_bottleneck(model)
    mod: nn.Module = model.model  # type: ignore[attr-defined,assignment]
    while True:
        inner = mod[1].submodule  # type: ignore[index]
        if isinstance(inner, nn.Sequential):
            mod = inner
            continue
        return inner


def cam_layer_name(model: nn.Module) -> str:
    """The layer (Seg-)Grad-CAM explains: the features the output head reads, at the finest resolution where
    they are not the raw output of a transposed convolution.

    UNet: "model.1", the outermost skip connection's output (encoder features concatenated with the decoder
    block one level above the head, half resolution), i.e. the input of the output head. AttentionUnet:
    "model.1.merge", the outermost attention layer's merge convolution (full resolution, a 3x3 conv over the
    gated skip features and the upsampled ones), the input of its 1x1 output conv.

    Before issue 15 (item 6) the UNet layer was "model.1.submodule.2": the decoder block alone, whose output
    is a stride-2, 3x3 transposed convolution plus a residual unit with an identity shortcut, so the
    transposed convolution's period-2 checkerboard reached the map (stripes over the background); the
    AttentionUnet layer is unchanged. See docs/results: "Grad-CAM artefacts (issue 15, item 6)"; `gradcam`
    low-passes the map on the layer's grid before upsampling it, which removes the checkerboard there too.
    """
    names = {n for n, _ in model.named_modules()}
    declared = getattr(model, "cam_layer", None)  # a network that names its own (nnU-Net's)
    if isinstance(declared, str) and declared in names:
        return declared
    if not isinstance(model, UNet | AttentionUnet):  # an imported bundle's network: its last feature layer
        return _last_feature_conv(model)
    if isinstance(model, AttentionUnet):
        for name in ("model.1.submodule.1.merge", "model.1.merge"):  # the second: 2-level networks only
            if name in names:
                return name
        raise ValueError("unsupported AttentionUnet layout for Grad-CAM")
    if "model.1.submodule" not in names:  # UNet: model.1 is the outermost SkipConnection (any depth)
        raise ValueError("unsupported network layout for Grad-CAM")
    return "model.1"


def _last_feature_conv(model: nn.Module) -> str:
    """The convolution before the output head (the last 2D convolution registered), for a network of any
    other layout: the features the head reads, as for the U-Net."""
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)]
    if not convs:
        raise ValueError("a network without 2D convolutions has no layer for Grad-CAM")
    return convs[-2] if len(convs) > 1 else convs[-1]


def bottleneck_embedding(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Global-average-pooled bottleneck activations, (B, C). Runs one forward pass. A network that is no
    MONAI UNet or AttentionUnet (an imported bundle's) gives its pooled output logits instead (B, K)."""
    if not isinstance(model, UNet | AttentionUnet):
        return model(x).mean(dim=(2, 3))
    feats: list[torch.Tensor] = []
    handle = _bottleneck(model).register_forward_hook(lambda _m, _i, out: feats.append(out))
    try:
        model(x)
    finally:
        handle.remove()
    return feats[0].mean(dim=(2, 3))


def attention_gates(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every attention gate's coefficient head (output (B, 1, h, w) in [0, 1]),
    outermost (full resolution) first; empty for networks without attention gates."""
    from monai.networks.nets.attentionunet import AttentionBlock

    return [(f"{n}.psi", m.psi) for n, m in model.named_modules() if isinstance(m, AttentionBlock)]
