"""The configurations of a network and of a training run: plain dataclasses, no torch import, so the web
process can validate a project's training settings (workers.services.training_config) without loading
torch. `networks` and `training` build and run what these describe."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class NetworkConfig:
    in_channels: int = 1
    num_classes: int = 2
    channels: tuple[int, ...] = (16, 32, 64, 128)
    num_res_units: int = 1
    dropout: float = 0.1
    arch: str = "unet"
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["channels"] = list(self.channels)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NetworkConfig:
        d = dict(d)
        d["channels"] = tuple(d.get("channels", cls.channels))
        return cls(**d)

    @property
    def divisor(self) -> int:
        return 2 ** (len(self.channels) - 1)


ARCHITECTURES = ("unet", "attention_unet")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 30
    batch_size: int = 8
    lr: float = 1e-3
    patch_size: tuple[int, int] = (128, 128)
    early_stopping_patience: int = 5
    seed: int = 0
    augment: bool = True
    modality: str = "MR"
    max_steps_per_epoch: int | None = None
    # The few-labels recipe (workers.services.training_config turns it on; these defaults keep the plain
    # loop): a fixed number of steps per epoch drawn with replacement (0: one pass over the images), the
    # share of patches centred on a labelled pixel, affine + gamma + noise augmentation, Dice computed over
    # the whole batch (an all-background patch is learnable, a painted one is not free), poly LR decay.
    steps_per_epoch: int = 0
    fg_oversample: float = 0.0
    strong_augment: bool = False
    batch_dice: bool = False
    poly_lr: bool = False

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["patch_size"] = list(self.patch_size)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        d = dict(d)
        if "patch_size" in d:
            d["patch_size"] = tuple(d["patch_size"])
        return cls(**d)
