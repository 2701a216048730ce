"""A training run's configuration: project overrides validated key by key, then the full JSON config
(network, training, scoring, explanations) a run records and executes."""

from dataclasses import dataclass
from typing import Any

import numpy as np
from django.core.exceptions import ValidationError

from annotations.models import Image, Project
from workers.ml.explain.policy import DEFAULT_METHODS, methods_for_arch
from workers.ml.models.checkpoint_format import BUNDLE_BACKEND, NNUNET_BACKEND
from workers.ml.models.config import ARCHITECTURES, NetworkConfig, TrainConfig
from workers.ml.models.fingerprint import Fingerprint, fingerprint, plan


# Defaults sized for a 2-core CPU; a GPU worker can take larger overrides.
def num_classes_for(project: Project) -> int:
    """Background plus every label value up to the project's largest one."""
    return max(project.label_values()) + 1


def project_fingerprint(project: Project) -> Fingerprint | None:
    """The fingerprint of the project's images (their in-plane sizes; stored shapes are (S, H, W[, C]))."""
    shapes = [tuple(s[1:3]) for s in Image.objects.filter(project=project).values_list("shape", flat=True)]
    return fingerprint(shapes) if shapes else None


def in_channels_for(project: Project) -> int:
    """Channels of one prepared slice: 3 when the project holds RGB images (S, H, W, 3), else 1."""
    shape = Image.objects.filter(project=project).values_list("shape", flat=True).first()
    return 3 if shape is not None and len(shape) == 4 else 1


def context_mm_for(project: Project) -> float | None:
    """How far apart (mm) 2.5D neighbours lie: the median slice spacing of the project's volumes, so a
    thin-slice series reads neighbours as far apart as a thick one (None without volumes)."""
    rows = Image.objects.filter(project=project).values_list("shape", "spacing")
    gaps = [float(sp[2]) for shape, sp in rows if shape and shape[0] > 1 and sp and len(sp) > 2 and sp[2] > 0]
    return float(np.median(gaps)) if gaps else None


def context_of(config: dict[str, Any]) -> tuple[int, float | None]:
    """Slices per input and their distance in mm for a run or version with this config (1 slice for
    versions from before 2.5D)."""
    given = config.get("input", {})
    return int(given.get("context_slices", 1)), given.get("context_mm")


# The few-labels recipe (docs/results: `python -m workers.ml.research.recipe`): 40 epochs of 25 steps drawn
# with replacement, a third of the patches centred on a labelled pixel, strong augmentation, batch Dice,
# poly LR decay; early stopping on the validation cases after 10 epochs without progress.
DEFAULTS: dict[str, Any] = {
    "epochs": 40,
    "batch_size": 8,  # patch_size, batch_size and channels: the dataset fingerprint's plan replaces these
    "lr": 1e-3,
    "patch_size": 128,
    "early_stopping_patience": 10,
    "steps_per_epoch": 25,
    "max_steps_per_epoch": 25,
    "fg_oversample": 0.33,
    "strong_augment": True,
    "batch_dice": True,
    "poly_lr": True,
    "augment": True,
    "arch": "unet",
    "channels": [16, 32, 64, 128],
    "num_res_units": 1,
    "dropout": 0.1,
    "mc_samples": 5,
    "explain_methods": list(DEFAULT_METHODS),
    "warm_start": True,
    # A run that starts from the active version fine-tunes it: fewer epochs (the same steps per epoch), so
    # the loop closes in minutes (docs/results: loop closure); an explicit "epochs" override wins.
    "warm_start_epochs": 12,
    # 2D by default: 2.5D input (3 neighbouring slices as channels) helped on MNI152 (+0.029 test Dice over
    # three seeds) but hurt on the CT organs (-0.060) and Colin27 (-0.07): docs/results, "2.5D". A project
    # of volumes may choose 3, 5 or 7 (the neighbours lie its median slice spacing apart).
    "context_slices": 1,
    # The model backend: the service's own U-Net ("builtin") or nnU-Net v2 ("nnunet": its fingerprint, plan,
    # preprocessing and trainer; on a CPU a short schedule of nnunet_epochs x nnunet_iterations steps instead
    # of its 1000 x 250; every run trains from scratch), or "monai_bundle": the project's imported MONAI
    # bundle fine-tuned by the service's trainer (warm_start_epochs epochs; services.training picks the version).
    "backend": "builtin",
    "nnunet_epochs": 10,
    "nnunet_iterations": 25,
}
BACKENDS = ("builtin", NNUNET_BACKEND, BUNDLE_BACKEND)
BACKEND_LABELS = {
    "builtin": "The service's U-Net (the few-labels recipe; fine-tunes the active version)",
    NNUNET_BACKEND: "nnU-Net v2 (its own plan, preprocessing and trainer; a short schedule on a CPU)",
    BUNDLE_BACKEND: "The imported MONAI bundle (its network fine-tuned by the service's trainer)",
}


PATCH_MULTIPLE = 32  # every network here downsamples at most 5 times (channels: 2..6 levels)


@dataclass(frozen=True)
class Rule:
    """One override: its kind ("int", "float", "bool", "choice", "list") and bounds. For "list", `lo`/`hi`
    bound the length and `items` is the rule of each element; `multiple_of` and `unique` as in JSON Schema."""

    kind: str
    lo: float | None = None
    hi: float | None = None
    choices: tuple[str, ...] = ()
    items: "Rule | None" = None
    multiple_of: int | None = None
    unique: bool = False
    values: tuple[int, ...] = ()  # "int": the only values allowed (an enum), when given


_ALL_METHODS = methods_for_arch("attention_unet")  # every method; which arch needs which: cross rule below
RULES: dict[str, Rule] = {
    "epochs": Rule("int", 1, 500),
    "batch_size": Rule("int", 1, 128),
    "lr": Rule("float", 1e-6, 1.0),
    "patch_size": Rule("int", PATCH_MULTIPLE, 1024, multiple_of=PATCH_MULTIPLE),
    "early_stopping_patience": Rule("int", 0, 100),
    "max_steps_per_epoch": Rule("int", 1, 100_000),
    "steps_per_epoch": Rule("int", 0, 100_000),
    "fg_oversample": Rule("float", 0.0, 1.0),
    "strong_augment": Rule("bool"),
    "batch_dice": Rule("bool"),
    "poly_lr": Rule("bool"),
    "augment": Rule("bool"),
    "seed": Rule("int", 0, 2**31 - 1),
    "arch": Rule("choice", choices=ARCHITECTURES),
    "channels": Rule("list", 2, 6, items=Rule("int", 2, 512)),
    "num_res_units": Rule("int", 0, 4),
    "dropout": Rule("float", 0.0, 0.9),
    "mc_samples": Rule("int", 1, 50),
    "explain_methods": Rule(
        "list", 0, len(_ALL_METHODS), items=Rule("choice", choices=_ALL_METHODS), unique=True
    ),
    "warm_start": Rule("bool"),
    "warm_start_epochs": Rule("int", 1, 500),
    # Slices per input (2.5D). Odd, so the case's slice is the middle one.
    "context_slices": Rule("int", 1, 7, values=(1, 3, 5, 7)),
    "backend": Rule("choice", choices=BACKENDS),
    "nnunet_epochs": Rule("int", 1, 1000),
    "nnunet_iterations": Rule("int", 1, 250),
}


def _fits(rule: Rule, v: Any) -> bool:
    if rule.kind == "bool":
        return isinstance(v, bool)
    if rule.kind == "choice":
        return isinstance(v, str) and v in rule.choices
    if rule.kind == "list":
        return (
            isinstance(v, list)
            and rule.lo <= len(v) <= rule.hi  # type: ignore[operator]
            and all(_fits(rule.items, x) for x in v)  # type: ignore[arg-type]
            and (not rule.unique or len(set(map(str, v))) == len(v))
        )
    numbers = int if rule.kind == "int" else int | float
    return (
        isinstance(v, numbers)
        and not isinstance(v, bool)
        and rule.lo <= v <= rule.hi  # type: ignore[operator]
        and (rule.multiple_of is None or v % rule.multiple_of == 0)
        and (not rule.values or v in rule.values)
    )


def _describe(rule: Rule) -> str:
    if rule.kind == "bool":
        return "true or false"
    if rule.kind == "choice":
        return f"one of {', '.join(rule.choices)}"
    if rule.kind == "list":
        distinct = "distinct " if rule.unique else ""
        return f"a list of {rule.lo:g}..{rule.hi:g} {distinct}values, each {_describe(rule.items)}"  # type: ignore[arg-type]
    if rule.values:
        return f"one of {', '.join(map(str, rule.values))}"
    multiple = f", a multiple of {rule.multiple_of}" if rule.multiple_of else ""
    return f"{'an integer' if rule.kind == 'int' else 'a number'} in {rule.lo:g}..{rule.hi:g}{multiple}"


def training_config_validate(overrides: dict[str, Any]) -> dict[str, Any]:
    """Known keys only, each within RULES; explanation methods the chosen network can produce. Raises
    django ValidationError (HTTP 400). `config_json_schema` states exactly these rules for the API schema."""
    if not isinstance(overrides, dict):
        raise ValidationError({"config": ["config overrides must be an object"]})
    unknown = sorted(set(overrides) - set(RULES))
    if unknown:
        raise ValidationError({"config": [f"unknown config keys: {', '.join(unknown)}"]})
    for key, value in overrides.items():
        if not _fits(RULES[key], value):
            raise ValidationError({"config": [f"{key} must be {_describe(RULES[key])}"]})
    merged = {**DEFAULTS, **overrides}
    unusable = [m for m in merged["explain_methods"] if m not in methods_for_arch(merged["arch"])]
    if unusable:
        raise ValidationError(
            {"config": [f"explain_methods {unusable} need another network (arch); {merged['arch']} cannot"]}
        )
    return {k: float(v) if RULES[k].kind == "float" else v for k, v in overrides.items()}


def _rule_schema(rule: Rule) -> dict[str, Any]:
    if rule.kind == "bool":
        return {"type": "boolean"}
    if rule.kind == "choice":
        return {"type": "string", "enum": list(rule.choices)}
    if rule.kind == "list":
        items = {"type": "array", "items": _rule_schema(rule.items), "minItems": rule.lo, "maxItems": rule.hi}  # type: ignore[arg-type]
        return {**items, "uniqueItems": True} if rule.unique else items
    out: dict[str, Any] = {"type": "integer" if rule.kind == "int" else "number"}
    out.update(minimum=rule.lo, maximum=rule.hi)
    if rule.values:
        out["enum"] = list(rule.values)
    return {**out, "multipleOf": rule.multiple_of} if rule.multiple_of else out


def config_json_schema() -> dict[str, Any]:
    """The overrides as JSON Schema (OpenAPI 3.0): the keys of RULES, nothing else, and the one rule across
    keys: a method that needs a particular network (attention) is allowed only with that network chosen."""
    props = {key: _rule_schema(rule) for key, rule in RULES.items()}
    generic = [m for m in _ALL_METHODS if m in methods_for_arch(DEFAULTS["arch"])]
    plain = {**props, "arch": {"type": "string", "enum": [a for a in ARCHITECTURES if a == DEFAULTS["arch"]]}}
    plain["explain_methods"] = {**props["explain_methods"], "items": {"type": "string", "enum": generic}}
    special = {
        **props,
        "arch": {"type": "string", "enum": [a for a in ARCHITECTURES if a != DEFAULTS["arch"]]},
    }
    return {
        "type": "object",
        "description": "training overrides; every key optional (defaults in workers/services/training_config.py)",
        "anyOf": [
            {"type": "object", "properties": plain, "additionalProperties": False},
            {"type": "object", "properties": special, "required": ["arch"], "additionalProperties": False},
        ],
    }


def training_config_build(*, project: Project, overrides: dict[str, Any], seed: int) -> dict[str, Any]:
    """The full run config: network, train, scoring and explanation settings (JSON). Patch size, batch size
    and network depth follow the project's dataset fingerprint (workers.ml.models.fingerprint) unless
    overridden; the fingerprint and its plan are recorded with the run."""
    fp = project_fingerprint(project)
    planned = plan(fp) if fp is not None else {}
    c = {**DEFAULTS, **planned, **overrides}
    context = int(c["context_slices"])
    per_slice = in_channels_for(project)
    net = NetworkConfig(
        in_channels=context * per_slice,
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
        steps_per_epoch=c["steps_per_epoch"],
        fg_oversample=c["fg_oversample"],
        strong_augment=c["strong_augment"],
        batch_dice=c["batch_dice"],
        poly_lr=c["poly_lr"],
    )
    return {
        "overrides": overrides,
        "fingerprint": fp.to_dict() if fp is not None else None,
        "plan": planned,
        "input": {
            "context_slices": context,
            "context_mm": context_mm_for(project) if context > 1 else None,
            "channels_per_slice": per_slice,
        },
        "network": net.to_dict(),
        "train": train_cfg.to_dict(),
        "scoring": {"mc_samples": c["mc_samples"], "aggregation": "mean"},
        "explain_methods": list(c["explain_methods"]),
        "warm_start": c["warm_start"] and c["backend"] != NNUNET_BACKEND,
        "warm_start_epochs": c["warm_start_epochs"],
        **_backend(c),
    }


def _backend(c: dict[str, Any]) -> dict[str, Any]:
    if c["backend"] == BUNDLE_BACKEND:  # the network and input are the bundle's (services.training)
        return {"backend": BUNDLE_BACKEND}
    if c["backend"] != NNUNET_BACKEND:
        return {}
    return {
        "backend": NNUNET_BACKEND,
        "nnunet": {"epochs": c["nnunet_epochs"], "iterations": c["nnunet_iterations"]},
    }


def warm_start_apply(config: dict[str, Any]) -> dict[str, Any]:
    """The config of a run that starts from the active version's weights: `warm_start_epochs` epochs unless
    the run's overrides set "epochs" themselves. Returns a new dict; the input is not changed."""
    if "epochs" in config["overrides"]:
        return config
    epochs = int(config.get("warm_start_epochs", DEFAULTS["warm_start_epochs"]))
    return {**config, "train": {**config["train"], "epochs": min(epochs, config["train"]["epochs"])}}
