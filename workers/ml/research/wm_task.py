"""A small real task for tests and reports: white matter on 16 axial MNI152 slices (nilearn, bundled),
and a tiny UNet trained on it in seconds on one CPU thread."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from skimage.transform import resize
from torch import nn

from workers.ml.explain.report import dice
from workers.ml.models.networks import NetworkConfig, build_network
from workers.ml.models.transforms import prepare_image

SLICE_SIZE = 96
AXIAL_SLICES = tuple(range(56, 120, 4))  # 16 axial slices through the cerebrum, where WM is plentiful
HELD_OUT_EVERY = 4  # every 4th slice is held out from training


@dataclass(frozen=True, eq=False)
class WMSlices:
    """Prepared axial MNI152 slices: images float32 (N, 1, 96, 96) from `prepare_image(..., "MR")`,
    masks uint8 (N, 96, 96) with 1 = white matter (template label 2), 0 = everything else."""

    images: np.ndarray
    masks: np.ndarray
    z: tuple[int, ...]

    def split(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(train images, train masks, held-out images, held-out masks)."""
        held = np.arange(len(self.z)) % HELD_OUT_EVERY == HELD_OUT_EVERY - 1
        return self.images[~held], self.masks[~held], self.images[held], self.masks[held]


@dataclass(frozen=True, eq=False)
class TrainedWM:
    model: nn.Module  # eval mode, CPU
    net_cfg: NetworkConfig
    data: WMSlices
    held_out_dice: float


def _square_crop(plane: np.ndarray) -> np.ndarray:
    """The head's in-plane bounding box on this template (x 26-170, y 27-208) padded to a square."""
    crop = plane[20:177, 20:215]
    pad = crop.shape[1] - crop.shape[0]
    return np.pad(crop, ((pad // 2, pad - pad // 2), (0, 0)))


def load_wm_slices() -> WMSlices:
    from workers.ml.imaging.datasets import mni152_tissue

    vol = mni152_tissue()
    images, masks = [], []
    for z in AXIAL_SLICES:
        img = resize(_square_crop(vol.image[:, :, z]), (SLICE_SIZE, SLICE_SIZE), order=1, anti_aliasing=True)
        lab = resize(
            _square_crop(vol.labels[:, :, z]), (SLICE_SIZE, SLICE_SIZE), order=0, preserve_range=True
        )
        images.append(prepare_image(img, vol.modality))  # the project's own MR preparation
        masks.append((lab == 2).astype(np.uint8))
    return WMSlices(np.stack(images), np.stack(masks), AXIAL_SLICES)


def train_wm_model(
    data: WMSlices, steps: int = 200, batch: int = 6, seed: int = 0, arch: str = "unet"
) -> TrainedWM:
    """Plain torch loop: Adam + (cross-entropy + soft Dice) on random mini-batches of the training slices."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    cfg = NetworkConfig(channels=(8, 16, 32, 64), num_classes=2, arch=arch)
    model = build_network(cfg)
    x_tr, y_tr, x_te, y_te = data.split()
    xs, ys = torch.from_numpy(x_tr), torch.from_numpy(y_tr).long()
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    model.train()
    for _ in range(steps):
        idx = torch.from_numpy(rng.choice(len(xs), size=batch, replace=False))
        logits = model(xs[idx])
        prob = logits.softmax(dim=1)[:, 1]
        target = ys[idx].float()
        soft_dice = 1 - 2 * (prob * target).sum() / (prob.sum() + target.sum() + 1e-6)
        loss = nn.functional.cross_entropy(logits, ys[idx]) + soft_dice
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        pred = model(torch.from_numpy(x_te)).argmax(dim=1).numpy()
    return TrainedWM(model, cfg, data, dice(pred == 1, y_te == 1))
