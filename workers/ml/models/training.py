"""Supervised training of a segmentation network: Dice+CE, Adam, validation Dice, early stopping.

Contracts:
- ``images`` are prepared float32 (C, H, W) arrays, or raw (H, W) / (H, W, 3) arrays which are prepared
  with ``train_cfg.modality``; ``masks`` are (H, W) integer label maps with values < num_classes.
  Images may differ in size; each step draws random ``patch_size`` crops (padded when smaller).
- Same seed, same data, same device and thread count -> identical weights (seeds python, numpy, torch,
  MONAI; augmentation and data order use their own seeded generators).
- Validation after every epoch: the pooled foreground Dice over the full validation images
  (``workers.ml.models.metrics``: an empty predictor scores 0 wherever the structure exists, a class found
  nowhere is left out). The best epoch's weights are returned.
  Without validation data the lowest training loss picks the best epoch and val_dice is NaN.
- ``progress(EpochReport)`` is called once per finished epoch. ``should_stop()`` is polled before every
  step; when it returns True training ends at once and the best weights so far are returned
  (``cancelled=True``).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from monai.losses import DiceCELoss
from monai.utils import set_determinism
from torch import nn

from workers.ml.models.config import TrainConfig  # noqa: F401  (re-exported)
from workers.ml.models.device import pick_device
from workers.ml.models.inference import predict_labels
from workers.ml.models.metrics import set_metrics
from workers.ml.models.networks import NetworkConfig, build_network
from workers.ml.models.transforms import ensure_prepared, train_transforms


@dataclass(frozen=True)
class EpochReport:
    epoch: int  # 1-based
    epochs: int
    train_loss: float
    val_dice: float
    seconds: float
    eta_seconds: float  # mean epoch time so far x epochs left (an upper bound if it stops early)


@dataclass(frozen=True)
class TrainResult:
    model: nn.Module  # eval mode, best epoch's weights, on the training device
    best_val_dice: float
    history: list[EpochReport] = field(default_factory=list)
    stopped_early: bool = False  # patience ran out
    cancelled: bool = False  # should_stop() said so
    best_epoch: int = 0  # 0: no epoch finished (weights are the initial ones)


def seed_everything(seed: int) -> None:
    """Seed python, numpy, torch and MONAI (which also makes cuDNN deterministic)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    set_determinism(seed=seed)


def _check_inputs(images: Sequence[np.ndarray], masks: Sequence[np.ndarray], num_classes: int) -> None:
    if len(images) != len(masks):
        raise ValueError(f"{len(images)} images but {len(masks)} masks")
    for img, m in zip(images, masks, strict=True):
        if img.shape[-2:] != m.shape:
            raise ValueError(f"image {img.shape} and mask {m.shape} differ in size")
        if m.size and int(m.max()) >= num_classes:
            raise ValueError(f"mask label {int(m.max())} >= num_classes {num_classes}")


class _Batches:
    """Seeded sampling and augmentation of training batches. Foreground oversampling (nnU-Net's): each
    sample is, with probability `fg_oversample`, drawn from the images that hold a labelled pixel and
    cropped around one; on sparse data (most slices empty) a per-image crop rule alone would rarely see
    the structure."""

    def __init__(self, images: list[np.ndarray], masks: list[np.ndarray], cfg: TrainConfig) -> None:
        self.images, self.masks, self.cfg = images, masks, cfg
        self.order_rng = np.random.default_rng(cfg.seed)
        self.labelled = np.flatnonzero([bool(np.any(m)) for m in masks])
        self.transforms = [
            train_transforms(
                cfg.patch_size, augment=cfg.augment, centre_on_label=centre, strong=cfg.strong_augment
            )
            for centre in (False, True)
        ]
        for t in self.transforms:
            t.set_random_state(seed=cfg.seed)

    def steps_per_epoch(self) -> int:
        steps = self.cfg.steps_per_epoch or math.ceil(len(self.images) / self.cfg.batch_size)
        return min(steps, self.cfg.max_steps_per_epoch or steps)

    def epoch(self) -> list[np.ndarray]:
        """Per step, a (2, n) array: image indices and whether to crop around a labelled pixel."""
        bs = self.cfg.batch_size
        if (
            self.cfg.steps_per_epoch
        ):  # fixed steps, drawn with replacement: few labels still train long enough
            return [self._draw(bs) for _ in range(self.steps_per_epoch())]
        perm = self.order_rng.permutation(len(self.images))
        return [
            np.stack([part, np.zeros_like(part)])
            for part in (perm[s * bs : (s + 1) * bs] for s in range(self.steps_per_epoch()))
        ]

    def _draw(self, n: int) -> np.ndarray:
        fg = (self.order_rng.random(n) < self.cfg.fg_oversample) & (len(self.labelled) > 0)
        idx = self.order_rng.integers(0, len(self.images), n)
        if fg.any():
            idx[fg] = self.order_rng.choice(self.labelled, int(fg.sum()))
        return np.stack([idx, fg.astype(np.int64)])

    def batch(self, step: np.ndarray, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = [], []
        for i, centre in zip(step[0], step[1], strict=True):
            d = self.transforms[int(centre)]({"image": self.images[i], "label": self.masks[i][None]})
            d = d[0] if isinstance(d, list) else d  # the label-centred crop returns a list of samples
            xs.append(torch.as_tensor(d["image"]).as_subclass(torch.Tensor))
            ys.append(torch.as_tensor(d["label"]).as_subclass(torch.Tensor))
        return torch.stack(xs).float().to(device), torch.stack(ys).long().to(device)


def poly_schedule(opt: torch.optim.Optimizer, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """nnU-Net's poly decay: lr x (1 - step / total) ** 0.9."""
    total = max(1, total_steps)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: max(0.0, 1.0 - step / total) ** 0.9)


def _clone_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _validate(
    model: nn.Module, val_images: list[np.ndarray], val_masks: list[np.ndarray], k: int, bs: int
) -> float:
    if not val_images:
        return float("nan")
    preds = predict_labels(model, val_images, batch_size=bs)
    return set_metrics(preds, val_masks, k).dice


def _train_epoch(
    model: nn.Module,
    batches: _Batches,
    loss_fn: nn.Module,
    opt: torch.optim.Optimizer,
    device: torch.device,
    should_stop: Callable[[], bool] | None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
) -> tuple[float, bool]:
    """One pass; returns (mean loss over the steps taken, cancelled)."""
    model.train()
    losses: list[float] = []
    for idx in batches.epoch():
        if should_stop is not None and should_stop():
            return (float(np.mean(losses)) if losses else float("nan")), True
        x, y = batches.batch(idx, device)
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        if scheduler is not None:
            scheduler.step()
        losses.append(float(loss.detach()))
    return float(np.mean(losses)), False


def train(
    net_cfg: NetworkConfig,
    train_cfg: TrainConfig,
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    val_images: Sequence[np.ndarray] = (),
    val_masks: Sequence[np.ndarray] = (),
    *,
    init_state: dict[str, torch.Tensor] | None = None,
    model: nn.Module | None = None,
    progress: Callable[[EpochReport], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    device: torch.device | str | None = None,
) -> TrainResult:
    """Train a fresh network (or warm-start from ``init_state``, a state_dict); see module contract.
    ``model``: train this network in place (an imported bundle's, with its weights) instead of building one
    from ``net_cfg``, whose channels and classes must still describe it."""
    if not images:
        raise ValueError("no training images")
    k = net_cfg.num_classes
    prep = [ensure_prepared(im, train_cfg.modality, net_cfg.in_channels) for im in images]
    vprep = [ensure_prepared(im, train_cfg.modality, net_cfg.in_channels) for im in val_images]
    tmasks = [np.asarray(m, dtype=np.uint8) for m in masks]
    vmasks = [np.asarray(m, dtype=np.uint8) for m in val_masks]
    _check_inputs(prep, tmasks, k)
    _check_inputs(vprep, vmasks, k)
    dev = torch.device(device) if device is not None else pick_device()

    seed_everything(train_cfg.seed)
    model = model if model is not None else build_network(net_cfg)
    if init_state is not None:
        model.load_state_dict(init_state)
    model.to(dev)
    batches = _Batches(prep, tmasks, train_cfg)
    # Batch Dice over the foreground classes only (nnU-Net: do_bg=False): the background Dice is ~1 on sparse
    # data and would dilute the gradient of the rare structure; CE still covers every pixel.
    loss_fn = DiceCELoss(
        to_onehot_y=True,
        softmax=True,
        batch=train_cfg.batch_dice,
        include_background=not train_cfg.batch_dice,
    )
    opt = torch.optim.Adam(model.parameters(), lr=train_cfg.lr)
    scheduler = (
        poly_schedule(opt, train_cfg.epochs * batches.steps_per_epoch()) if train_cfg.poly_lr else None
    )

    history: list[EpochReport] = []
    best_state, best_score, best_epoch, best_dice = _clone_state(model), -math.inf, 0, float("nan")
    stale, stopped_early, cancelled = 0, False, False
    for epoch in range(1, train_cfg.epochs + 1):
        t0 = time.perf_counter()
        loss, cancelled = _train_epoch(model, batches, loss_fn, opt, dev, should_stop, scheduler)
        if cancelled:
            break
        dice = _validate(model, vprep, vmasks, k, train_cfg.batch_size)
        # What "better" means for keeping the best epoch. NaN Dice: no structure anywhere in the
        # validation truths and none predicted, which is right there.
        score = (1.0 if math.isnan(dice) else dice) if vprep else -loss
        if score > best_score:
            best_state, best_score, best_epoch, best_dice, stale = _clone_state(model), score, epoch, dice, 0
        else:
            stale += 1
        seconds = time.perf_counter() - t0
        mean_s = (sum(h.seconds for h in history) + seconds) / epoch
        report = EpochReport(
            epoch, train_cfg.epochs, loss, dice, seconds, mean_s * (train_cfg.epochs - epoch)
        )
        history.append(report)
        if progress is not None:
            progress(report)
        if 0 < train_cfg.early_stopping_patience <= stale:  # patience 0 disables early stopping
            stopped_early = True
            break

    model.load_state_dict(best_state)
    model.eval()
    return TrainResult(model, best_dice, history, stopped_early, cancelled, best_epoch)
