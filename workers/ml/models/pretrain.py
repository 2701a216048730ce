"""Self-supervised pretraining of a segmentation network on the project's unlabelled pool (a cold start).

Objective: masked-image modelling with denoising (SimMIM / Models Genesis in-painting, for a conv U-Net).
Each step draws random ``patch_size`` crops of the pool images (edge-padded when smaller, random flips
and, for square patches, quarter turns), corrupts them and regresses the clean crop:
- a random ``mask_ratio`` share of the cells of a ``mask_cell`` x ``mask_cell`` grid is replaced by
  uniform noise over the crop's intensity range (the network must in-paint from context: anatomy, not
  pixel copying, which the skip connections would make trivial);
- every pixel gets Gaussian noise of ``noise_std`` x the crop's standard deviation (denoising).
The target is the clean crop normalised per sample and channel to zero mean and unit variance (MAE's
``norm_pix_loss``: MR and CT crops of any contrast weigh the same). The loss is the MSE over the masked
pixels plus ``visible_weight`` x the MSE over the visible ones.

Network: the SAME architecture as ``build_network(net_cfg)`` with ``in_channels`` output channels (the
reconstruction), so every weight below the output head has the segmentation network's shape. The output
head (``head_prefix(net_cfg)``: MONAI UNet's top up-block ``model.2``, the AttentionUnet's final 1x1 conv
``model.2.conv``; found as the modules whose shapes depend on ``num_classes``) is not pretrained.

Contracts:
- ``pretrain(...)`` returns a COMPLETE state_dict of ``build_network(net_cfg)`` (loads with
  ``strict=True``, so ``training.train(init_state=...)`` accepts it): the body from pretraining, the head
  exactly as ``train()`` would initialise it with ``seed`` (seed_everything(seed); build_network(net_cfg)),
  so a comparison against random initialisation with the same seed differs in the body only.
- Same images, seed, device and thread count -> identical weights (python, numpy, torch, MONAI seeded;
  crops and corruption from their own numpy generator).
- ``progress(PretrainReport)`` every ``report_every`` steps and after the last one; ``should_stop()`` is
  polled before every step; when it returns True pretraining ends at once and the weights so far are
  returned (``steps_done`` in the last report says how far it got).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn

from workers.ml.models.config import NetworkConfig
from workers.ml.models.device import pick_device
from workers.ml.models.networks import build_network
from workers.ml.models.training import poly_schedule, seed_everything


@dataclass(frozen=True)
class PretrainReport:
    step: int  # steps done so far
    steps: int  # steps asked for
    loss: float  # mean reconstruction loss over the steps since the previous report
    seconds: float  # since the start
    cancelled: bool = False

    @property
    def fraction(self) -> float:
        return self.step / self.steps if self.steps else 1.0


def head_prefix(net_cfg: NetworkConfig) -> str:
    """The dotted module prefix of the output head: the longest common prefix of the state_dict keys
    whose shapes change with ``num_classes`` (everything under it belongs to the head)."""
    a = build_network(replace(net_cfg, num_classes=2)).state_dict()
    b = build_network(replace(net_cfg, num_classes=3)).state_dict()
    differ = [k.split(".") for k in a if a[k].shape != b[k].shape]
    if not differ:
        raise ValueError("no output head found")
    common: list[str] = []
    for parts in zip(*differ, strict=False):
        if len(set(parts)) != 1:
            break
        common.append(parts[0])
    if len(common) == min(len(d) for d in differ):  # one differing key: its module, not the parameter
        common = common[:-1]
    return ".".join(common)


def head_keys(net_cfg: NetworkConfig) -> list[str]:
    """The state_dict keys of ``build_network(net_cfg)`` that pretraining does not provide."""
    prefix = head_prefix(net_cfg) + "."
    return [k for k in build_network(net_cfg).state_dict() if k.startswith(prefix)]


def _pair(patch_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(patch_size, int):
        return patch_size, patch_size
    ph, pw = (int(p) for p in patch_size)
    return ph, pw


class _Corrupted:
    """Seeded crops, flips and corruption of pool images; a batch is (corrupted, target, mask)."""

    def __init__(
        self,
        images: list[np.ndarray],
        patch: tuple[int, int],
        seed: int,
        *,
        mask_ratio: float,
        mask_cell: int,
        noise_std: float,
    ) -> None:
        self.images, self.patch = images, patch
        self.rng = np.random.default_rng(seed)
        self.mask_ratio, self.mask_cell, self.noise_std = mask_ratio, mask_cell, noise_std

    def _crop(self, img: np.ndarray) -> np.ndarray:
        ph, pw = self.patch
        h, w = img.shape[-2:]
        if h < ph or w < pw:  # edge-pad to at least the patch, centred (as SpatialPadd does)
            dh, dw = max(0, ph - h), max(0, pw - w)
            img = np.pad(img, ((0, 0), (dh // 2, dh - dh // 2), (dw // 2, dw - dw // 2)), mode="edge")
            h, w = img.shape[-2:]
        r = int(self.rng.integers(0, h - ph + 1))
        c = int(self.rng.integers(0, w - pw + 1))
        out = img[:, r : r + ph, c : c + pw]
        if self.rng.random() < 0.5:
            out = out[:, ::-1, :]
        if self.rng.random() < 0.5:
            out = out[:, :, ::-1]
        if ph == pw:
            out = np.rot90(out, k=int(self.rng.integers(0, 4)), axes=(1, 2))
        return np.ascontiguousarray(out, dtype=np.float32)

    def _mask(self) -> np.ndarray:
        ph, pw = self.patch
        cell = self.mask_cell
        gh, gw = -(-ph // cell), -(-pw // cell)
        grid = self.rng.random((gh, gw)) < self.mask_ratio
        return np.kron(grid, np.ones((cell, cell), dtype=bool))[:ph, :pw]

    def sample(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        clean = self._crop(self.images[int(self.rng.integers(0, len(self.images)))])
        mean = clean.mean(axis=(1, 2), keepdims=True)
        std = clean.std(axis=(1, 2), keepdims=True)
        target = (clean - mean) / (std + 1e-6)
        mask = self._mask()
        noisy = clean + self.rng.standard_normal(clean.shape).astype(np.float32) * (self.noise_std * std)
        lo, hi = clean.min(axis=(1, 2), keepdims=True), clean.max(axis=(1, 2), keepdims=True)
        fill = lo + self.rng.random(clean.shape).astype(np.float32) * (hi - lo)
        corrupted = np.where(mask[None], fill, noisy).astype(np.float32)
        return corrupted, target.astype(np.float32), mask

    def batch(self, n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        xs, ys, ms = zip(*(self.sample() for _ in range(n)), strict=True)
        return (
            torch.from_numpy(np.stack(xs)).to(device),
            torch.from_numpy(np.stack(ys)).to(device),
            torch.from_numpy(np.stack(ms)[:, None]).to(device),
        )


def reconstruction_loss(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, visible_weight: float
) -> torch.Tensor:
    """MSE over the masked pixels + ``visible_weight`` x MSE over the visible ones (mask: (B, 1, H, W))."""
    err = (pred - target) ** 2
    m = mask.expand_as(err).float()
    masked = (err * m).sum() / m.sum().clamp_min(1.0)
    visible = (err * (1 - m)).sum() / (1 - m).sum().clamp_min(1.0)
    return masked + visible_weight * visible


def pretrain(
    images: Sequence[np.ndarray],
    net_cfg: NetworkConfig,
    *,
    steps: int,
    patch_size: int | Sequence[int],
    batch_size: int,
    lr: float = 1e-3,
    seed: int = 0,
    mask_ratio: float = 0.4,
    mask_cell: int = 16,
    noise_std: float = 0.1,
    visible_weight: float = 0.25,
    report_every: int = 25,
    progress: Callable[[PretrainReport], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    device: torch.device | str | None = None,
) -> dict[str, torch.Tensor]:
    """Pretrain on prepared float32 (C, H, W) pool images (no labels); see the module contract.
    Adam with nnU-Net's poly LR decay over ``steps``."""
    if not images:
        raise ValueError("no pool images to pretrain on")
    if steps < 0 or batch_size < 1 or not 0.0 <= mask_ratio < 1.0 or mask_cell < 1:
        raise ValueError("steps >= 0, batch_size >= 1, 0 <= mask_ratio < 1 and mask_cell >= 1 required")
    pool = [np.asarray(im, dtype=np.float32) for im in images]
    for im in pool:
        if im.ndim != 3 or im.shape[0] != net_cfg.in_channels:
            raise ValueError(f"expected prepared ({net_cfg.in_channels}, H, W) images, got {im.shape}")
    patch = _pair(patch_size)
    if patch[0] % net_cfg.divisor or patch[1] % net_cfg.divisor:
        raise ValueError(f"patch {patch} is not divisible by the network's {net_cfg.divisor}")
    dev = torch.device(device) if device is not None else pick_device()

    seed_everything(seed)
    seg_state = build_network(net_cfg).state_dict()  # the head train() would start from with this seed
    recon_cfg = replace(net_cfg, num_classes=net_cfg.in_channels)
    model: nn.Module = build_network(recon_cfg).to(dev)
    data = _Corrupted(pool, patch, seed, mask_ratio=mask_ratio, mask_cell=mask_cell, noise_std=noise_std)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = poly_schedule(opt, steps)

    t0 = time.perf_counter()
    window: list[float] = []
    done, cancelled = 0, False
    model.train()
    for step in range(steps):
        if should_stop is not None and should_stop():
            cancelled = True
            break
        x, y, m = data.batch(batch_size, dev)
        opt.zero_grad(set_to_none=True)
        loss = reconstruction_loss(model(x), y, m, visible_weight)
        loss.backward()
        opt.step()
        sched.step()
        window.append(float(loss.detach()))
        done = step + 1
        if progress is not None and (done % max(1, report_every) == 0 or done == steps):
            progress(PretrainReport(done, steps, float(np.mean(window)), time.perf_counter() - t0))
            window = []
    if progress is not None and (cancelled or steps == 0):
        loss_now = float(np.mean(window)) if window else math.nan
        progress(PretrainReport(done, steps, loss_now, time.perf_counter() - t0, cancelled=cancelled))

    prefix = head_prefix(net_cfg) + "."
    body = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    out: dict[str, torch.Tensor] = {}
    for k, fresh in seg_state.items():
        take = not k.startswith(prefix) and k in body and body[k].shape == fresh.shape
        out[k] = body[k] if take else fresh.detach().to("cpu", copy=True)
    return out
