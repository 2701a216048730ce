"""A training run's configuration: project overrides validated key by key, then the full JSON config
(network, training, scoring, explanations) a run records and executes."""

from typing import Any

from django.core.exceptions import ValidationError

from annotations.models import Project
from workers.ml.explain_policy import methods_for_arch
from workers.ml.networks import ARCHITECTURES, NetworkConfig
from workers.ml.training import TrainConfig
from workers.services.datasets import in_channels_for, num_classes_for

# Defaults sized for a 2-core CPU; a GPU worker can take larger overrides.
DEFAULTS: dict[str, Any] = {
    "epochs": 15,
    "batch_size": 8,
    "lr": 1e-3,
    "patch_size": 128,
    "early_stopping_patience": 5,
    "max_steps_per_epoch": 20,
    "augment": True,
    "arch": "unet",
    "channels": [16, 32, 64, 128],
    "num_res_units": 1,
    "dropout": 0.1,
    "mc_samples": 5,
    "explain_methods": ["gradcam", "saliency"],
    "warm_start": True,
}


def _int(lo: int, hi: int):
    def check(name: str, v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise ValidationError({"config": [f"{name} must be an integer in {lo}..{hi}"]})
        return v

    return check


def _float(lo: float, hi: float):
    def check(name: str, v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, int | float) or not lo <= v <= hi:
            raise ValidationError({"config": [f"{name} must be a number in [{lo}, {hi}]"]})
        return float(v)

    return check


def _bool(name: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValidationError({"config": [f"{name} must be true or false"]})
    return v


def _channels(name: str, v: Any) -> list[int]:
    if (
        not isinstance(v, list)
        or not 2 <= len(v) <= 6
        or not all(isinstance(c, int) and not isinstance(c, bool) and 2 <= c <= 512 for c in v)
    ):
        raise ValidationError({"config": [f"{name} must be a list of 2..6 integers in 2..512"]})
    return v


def _methods(name: str, v: Any) -> list[str]:
    known = methods_for_arch("attention_unet")  # every method; the arch check is in training_config_validate
    if not isinstance(v, list) or not all(m in known for m in v) or len(set(v)) != len(v):
        raise ValidationError({"config": [f"{name} must be a list of distinct methods from {known}"]})
    return v


def _arch(name: str, v: Any) -> str:
    if v not in ARCHITECTURES:
        raise ValidationError({"config": [f"{name} must be one of {', '.join(ARCHITECTURES)}"]})
    return v


OVERRIDES = {
    "epochs": _int(1, 500),
    "batch_size": _int(1, 128),
    "lr": _float(1e-6, 1.0),
    "patch_size": _int(16, 1024),
    "early_stopping_patience": _int(0, 100),
    "max_steps_per_epoch": _int(1, 100_000),
    "augment": _bool,
    "seed": _int(0, 2**31 - 1),
    "arch": _arch,
    "channels": _channels,
    "num_res_units": _int(0, 4),
    "dropout": _float(0.0, 0.9),
    "mc_samples": _int(1, 50),
    "explain_methods": _methods,
    "warm_start": _bool,
}


def training_config_validate(overrides: dict[str, Any]) -> dict[str, Any]:
    """Known keys only, each within a sane range; the patch must fit the network's downsampling.
    Raises django ValidationError (HTTP 400)."""
    if not isinstance(overrides, dict):
        raise ValidationError({"config": ["config overrides must be an object"]})
    unknown = sorted(set(overrides) - set(OVERRIDES))
    if unknown:
        raise ValidationError({"config": [f"unknown config keys: {', '.join(unknown)}"]})
    clean = {k: OVERRIDES[k](k, v) for k, v in overrides.items()}
    merged = {**DEFAULTS, **clean}
    divisor = 2 ** (len(merged["channels"]) - 1)
    if merged["patch_size"] % divisor:
        raise ValidationError({"config": [f"patch_size must be a multiple of {divisor} for these channels"]})
    unusable = [m for m in merged["explain_methods"] if m not in methods_for_arch(merged["arch"])]
    if unusable:
        raise ValidationError(
            {"config": [f"explain_methods {unusable} need another network (arch); {merged['arch']} cannot"]}
        )
    return clean


def training_config_build(*, project: Project, overrides: dict[str, Any], seed: int) -> dict[str, Any]:
    """The full run config: network, train, scoring and explanation settings (JSON)."""
    c = {**DEFAULTS, **overrides}
    net = NetworkConfig(
        in_channels=in_channels_for(project),
        num_classes=num_classes_for(project),
        channels=tuple(c["channels"]),
        num_res_units=c["num_res_units"],
        dropout=c["dropout"],
        arch=c["arch"],
    )
    train_cfg = TrainConfig(
        epochs=c["epochs"],
        batch_size=c["batch_size"],
        lr=c["lr"],
        patch_size=(c["patch_size"], c["patch_size"]),
        early_stopping_patience=c["early_stopping_patience"],
        seed=seed,
        augment=c["augment"],
        modality=project.modality,
        max_steps_per_epoch=c["max_steps_per_epoch"],
    )
    return {
        "overrides": overrides,
        "network": net.to_dict(),
        "train": train_cfg.to_dict(),
        "scoring": {"mc_samples": c["mc_samples"], "aggregation": "mean"},
        "explain_methods": list(c["explain_methods"]),
        "warm_start": c["warm_start"],
    }
