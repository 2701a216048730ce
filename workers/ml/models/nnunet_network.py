"""An nnU-Net v2 network as a plain torch module the service runs like its own: nnU-Net's intensity
normalisation (the scheme its plan chose per channel, with its statistics) in torch, then nnU-Net's 2D
network (dynamic_network_architectures' PlainConvUNet, deep supervision off) on the whole image. Logits out,
differentiable end to end, so proposals, MC scoring, Grad-CAM and saliency work on it unchanged.

As nnU-Net's predictor does for an image no larger than its patch: crop to the non-zero region (any
channel), normalise the crop, pad it with zeros to the patch size (centred), run the network, and give
every pixel outside the crop to background. A larger crop runs whole (the network is fully convolutional)
where nnU-Net would tile it with Gaussian weights. Nothing is resampled: the service gives nnU-Net every
image on a unit pixel grid, so its plan's 2D spacing is 1 x 1."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

CONFIGURATION = "2d"
_EPS = 1e-8
_BACKGROUND_LOGIT = 30.0  # outside the crop: softmax 1.0 for background, as nnU-Net reverts its cropping


class NnunetNetwork(nn.Module):
    def __init__(self, plans: dict[str, Any], dataset_json: dict[str, Any]):
        super().__init__()
        from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
        from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
        from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

        manager = PlansManager(plans)
        config = manager.get_configuration(CONFIGURATION)
        self.in_channels = determine_num_input_channels(manager, config, dataset_json)
        self.network = nnUNetTrainer.build_network_architecture(
            manager,
            config,
            self.in_channels,
            manager.get_label_manager(dataset_json).num_segmentation_heads,
            enable_deep_supervision=False,
        )
        self.schemes = list(config.normalization_schemes)
        self.use_mask = [bool(m) for m in config.use_mask_for_norm]
        stats = plans.get("foreground_intensity_properties_per_channel", {})
        self.stats = [stats.get(str(c), {}) for c in range(self.in_channels)]
        strides = config.network_arch_init_kwargs["strides"]
        self.stride = int(max(torch.tensor(strides).prod(dim=0).tolist()))  # the network's own multiple
        self.size_divisor = 1  # any input size: forward pads its crop itself
        # Grad-CAM's layer: the last decoder stage, whose output the final 1x1 head reads (the other heads of
        # deep supervision sit unused after it: the last convolution registered is not in the forward pass)
        self.cam_layer = f"network.decoder.stages.{len(self.network.decoder.stages) - 1}"
        self.patch_size = tuple(int(p) for p in config.patch_size)

    def normalise(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """nnU-Net's DefaultPreprocessor normalisation of a (1, C, h, w) crop; mask (1, 1, h, w): non-zero."""
        out = [self._channel(x[:, c : c + 1], mask, c) for c in range(x.shape[1])]
        return torch.cat(out, dim=1)

    def _channel(self, x: torch.Tensor, mask: torch.Tensor, c: int) -> torch.Tensor:
        scheme = self.schemes[c]
        if scheme == "ZScoreNormalization":
            if not self.use_mask[c]:
                mean = x.mean(dim=(2, 3), keepdim=True)
                std = x.std(dim=(2, 3), keepdim=True, unbiased=False)
                return (x - mean) / std.clamp_min(_EPS)
            m = mask.to(x.dtype)
            n = m.sum(dim=(2, 3), keepdim=True).clamp_min(1.0)
            mean = (x * m).sum(dim=(2, 3), keepdim=True) / n
            std = (((x - mean) ** 2 * m).sum(dim=(2, 3), keepdim=True) / n).sqrt()
            return torch.where(mask, (x - mean) / std.clamp_min(_EPS), torch.zeros_like(x))
        if scheme == "CTNormalization":
            s = self.stats[c]
            clipped = x.clamp(float(s["percentile_00_5"]), float(s["percentile_99_5"]))
            return (clipped - float(s["mean"])) / max(float(s["std"]), _EPS)
        if scheme == "RescaleTo01Normalization":
            lo = x.amin(dim=(2, 3), keepdim=True)
            return (x - lo) / (x.amax(dim=(2, 3), keepdim=True) - lo).clamp_min(_EPS)
        if scheme == "RGBTo01Normalization":
            return x / 255.0
        if scheme == "NoNormalization":
            return x
        raise ValueError(f"nnU-Net normalisation {scheme!r} is not supported")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self._one(x[i : i + 1]) for i in range(x.shape[0])])

    def _one(self, x: torch.Tensor) -> torch.Tensor:
        nonzero = (x != 0).any(dim=1)[0]  # nnU-Net's create_nonzero_mask (without filling holes)
        if not bool(nonzero.any()):
            nonzero = torch.ones_like(nonzero)
        rows, cols = nonzero.any(dim=1).nonzero()[:, 0], nonzero.any(dim=0).nonzero()[:, 0]
        r0, r1, c0, c1 = int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1
        crop = self.normalise(x[..., r0:r1, c0:c1], nonzero[None, None, r0:r1, c0:c1])
        padded, (top, left) = self._pad(crop)
        logits = self.network(padded)[..., top : top + r1 - r0, left : left + c1 - c0]
        full = logits.new_zeros((1, logits.shape[1], *x.shape[2:]))
        full[:, 0] = _BACKGROUND_LOGIT
        full[..., r0:r1, c0:c1] = logits
        return full

    def _pad(self, crop: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Zeros around the crop up to the patch size (at least) and a multiple of the size divisor."""
        d = self.stride
        h, w = crop.shape[2:]
        th = -(-max(h, self.patch_size[0]) // d) * d
        tw = -(-max(w, self.patch_size[1]) // d) * d
        top, left = (th - h) // 2, (tw - w) // 2
        padded = torch.nn.functional.pad(crop, (left, tw - w - left, top, th - h - top))
        return padded, (top, left)
