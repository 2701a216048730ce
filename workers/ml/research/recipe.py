"""python -m workers.ml.research.recipe [--datasets a,b] [--recipes plain,few_labels] [--labels N --seeds S] [--json OUT]

Full-data test Dice at native resolution on the real labelled volumes of DATA.md: axial slices at the
volume's own in-plane size, split by position blocks (workers.ml.research.sim_data.assign_splits: pool +
validation + test, neighbouring slices never on both sides), a network trained on every pool slice with
each recipe, scored by the pooled Dice on the test slices (workers.ml.models.metrics), per class, with
false positives on test slices that lack the class. With `--labels N` a network is trained on N pool slices
drawn at random per seed instead (e.g. `--datasets colin27_deep_grey,totalseg_kidney --labels 20 --seeds 3`:
false positives on empty held-out slices after 20 labels on a sparse and a small-organ task).

Recipes: `nnunet` is nnU-Net v2 (workers.ml.models.nnunet: its fingerprint, plan, preprocessing and
trainer, `--nnunet-epochs` x `--nnunet-iterations` steps) on the same slices, labels and test set, for the
backend comparison of issue 18; `plain` is the service's configuration before issue 15 (15 epochs of at most 20 steps, uniform
crops, flips/rot90 only, per-sample Dice); `few_labels` is the one the service now uses
(workers.services.training_config.DEFAULTS and the fingerprint's plan of patch, batch and depth: fixed steps per epoch drawn with replacement, a third of the
patches centred on a labelled pixel, affine + gamma + noise, batch Dice, poly LR decay)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from workers.ml.imaging import datasets
from workers.ml.models.config import NetworkConfig, TrainConfig
from workers.ml.models.device import limit_cpu_threads
from workers.ml.models.fingerprint import fingerprint, plan
from workers.ml.models.inference import predict_labels
from workers.ml.models.metrics import set_metrics
from workers.ml.models.training import train
from workers.ml.models.transforms import prepare_image
from workers.ml.research.sim_data import POOL, TEST, VAL, assign_splits


def totalseg_kidney() -> datasets.LabelledVolume:
    """A small-organ task: the TotalSegmentator CT with the kidneys as the only class (the other organs are
    background): 2 % of the voxels, absent from 7 of the 30 axial slices. (The sparse-slice task is
    Colin27's deep grey: absent from 69 % of its axial slices.)"""
    ct = datasets.totalseg_ct()
    kidney = next(v for v, n in ct.label_names.items() if "kidney" in n)
    labels = (ct.labels == kidney).astype(np.uint8)
    return dataclasses.replace(
        ct, name="totalseg_kidney", labels=labels, label_names={1: ct.label_names[kidney]}
    )


LOADERS = {
    "mni152_tissue": datasets.mni152_tissue,
    "colin27_deep_grey": datasets.colin27_deep_grey,
    "totalseg_ct": datasets.totalseg_ct,
    "totalseg_kidney": totalseg_kidney,
}
COMMON: dict[str, Any] = {"batch_size": 8, "lr": 1e-3, "patch_size": (128, 128), "seed": 0}
RECIPES: dict[str, dict[str, Any]] = {  # "<recipe>_25d": the same with 3 neighbouring slices as channels
    "plain": {**COMMON, "epochs": 15, "max_steps_per_epoch": 20, "early_stopping_patience": 5},
    "few_labels": {
        **COMMON,
        "epochs": 40,
        "steps_per_epoch": 25,
        "early_stopping_patience": 10,
        "fg_oversample": 0.33,
        "strong_augment": True,
        "batch_dice": True,
        "poly_lr": True,
    },
}


RECIPES["few_labels_25d"] = RECIPES["few_labels"]


def native_slices(volume: datasets.LabelledVolume) -> tuple[list[datasets.VolumeSlice], list[str | None]]:
    size = int(max(volume.image.shape[0], volume.image.shape[1]))  # the longer in-plane side, 1 px = 1 voxel
    items = datasets.slices(volume, axes=("axial",), size=size)
    return items, assign_splits(items)


def with_neighbours(items: list, prepared: list[np.ndarray], k: int) -> list[np.ndarray]:
    """(k, H, W) per slice: the slices k // 2 before and after it along its axis (the nearest kept slice at
    the ends), each prepared on its own."""
    where = {(s.axis, s.index): i for i, s in enumerate(items)}
    out = []
    for s in items:
        chans = []
        for d in range(-(k // 2), k // 2 + 1):
            while (s.axis, s.index + d) not in where:  # step back towards the slice itself (always there)
                d -= 1 if d > 0 else -1
            chans.append(prepared[where[(s.axis, s.index + d)]][0])
        out.append(np.stack(chans).astype(np.float32))
    return out


PICKS = ("random", "fg_half")


def pick_labels(masks: list[np.ndarray], n: int, rng: np.random.Generator, pick: str) -> np.ndarray:
    """Indices of the `n` slices to label: at random, or `fg_half`: half of them (rounded up) among the slices
    that hold a label (as a foreground-aware pick would find them), the rest at random from the others."""
    if pick == "random":
        return rng.choice(len(masks), size=n, replace=False)
    if pick != "fg_half":
        raise ValueError(f"pick must be one of {PICKS}")
    holds = np.array([bool(m.any()) for m in masks])
    fg, other = np.flatnonzero(holds), np.flatnonzero(~holds)
    k = min(len(fg), -(-n // 2))
    return np.concatenate(
        [rng.choice(fg, size=k, replace=False), rng.choice(other, size=n - k, replace=False)]
    )


def run_one(
    name: str,
    recipe: str,
    threads: int,
    labels: int | None = None,
    seed: int = 0,
    epochs: int | None = None,
    label_pick: str = "random",
    nnunet_schedule: tuple[int, int] = (40, 25),
) -> dict:
    """Train `recipe` on the pool slices (all of them, or `labels` drawn at random with `seed`: empty slices
    as likely as any, as a reader's first labels would be) and score the test slices."""
    limit_cpu_threads(threads)
    volume = LOADERS[name]()
    items, splits = native_slices(volume)
    k = int(volume.labels.max()) + 1
    prepared = [prepare_image(s.image, volume.modality) for s in items]
    context = 3 if recipe.endswith("_25d") else 1
    if context > 1:  # 2.5D: the slice and its neighbours (clamped at the ends) as input channels
        prepared = with_neighbours(items, prepared, context)

    def pick(split: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
        idx = [i for i, sp in enumerate(splits) if sp == split]
        return [prepared[i] for i in idx], [items[i].mask for i in idx]

    (tx, ty), (vx, vy), (sx, sy) = pick(POOL), pick(VAL), pick(TEST)
    if labels is not None:
        chosen = pick_labels(ty, min(labels, len(tx)), np.random.default_rng(seed), label_pick)
        tx, ty = [tx[i] for i in chosen], [ty[i] for i in chosen]
    planned = plan(fingerprint([x.shape for x in tx], ty)) if recipe.startswith("few_labels") else {}
    settings = {**RECIPES.get(recipe, COMMON), **planned}
    channels = tuple(settings.pop("channels", (16, 32, 64, 128)))
    settings["patch_size"] = (
        (settings["patch_size"],) * 2 if isinstance(settings["patch_size"], int) else settings["patch_size"]
    )
    settings["seed"] = seed
    if epochs is not None:
        settings["epochs"] = epochs
    cfg = TrainConfig(modality=volume.modality, **settings)
    net = NetworkConfig(in_channels=context, num_classes=k, channels=channels, num_res_units=1)
    t0 = time.perf_counter()
    if recipe == "nnunet":
        return _nnunet_row(
            name, volume, items, (tx, ty, vx, vy, sx, sy), seed, labels, nnunet_schedule, threads
        )
    result = train(net, cfg, tx, ty, vx, vy)
    seconds = time.perf_counter() - t0
    metrics = set_metrics(predict_labels(result.model, sx), sy, k)
    return {
        "dataset": name,
        "recipe": recipe,
        "labels": labels,
        "pick": label_pick if labels is not None else None,
        "seed": seed,
        "train_labelled_slices": int(sum(bool(m.any()) for m in ty)),
        "size": int(items[0].image.shape[0]),
        "slices": {"train": len(tx), "validation": len(vx), "test": len(sx)},
        "plan": {
            "patch_size": list(cfg.patch_size),
            "batch_size": cfg.batch_size,
            "channels": list(channels),
        },
        "epochs": cfg.epochs,
        "epochs_run": len(result.history),
        "best_epoch": result.best_epoch,
        "validation_dice": result.best_val_dice,
        "test": metrics.to_dict(),
        "test_dice": metrics.dice,
        "label_names": {int(a): b for a, b in volume.label_names.items()},
        "train_seconds": round(seconds, 1),
    }


def _nnunet_row(name, volume, items, sets, seed, labels, schedule, threads) -> dict:
    """nnU-Net v2 trained on the same train slices (its own plan, preprocessing and trainer, in a child
    interpreter), scored on the same test slices with the service's metric; wall time of fit + predict."""
    import tempfile

    import torch

    from workers.ml.models import nnunet

    tx, ty, vx, vy, sx, sy = sets
    k = int(volume.labels.max()) + 1
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="nnunet-bench-") as tmp:
        root = Path(tmp)
        cases = [nnunet.NnunetCase(f"s_{i:04d}", x, y) for i, (x, y) in enumerate(zip(tx, ty, strict=True))]
        names = [volume.modality if volume.modality == "CT" else "channel_0"]
        nnunet.raw_dataset_write(root, 1, name, cases, names, ["background", *(f"c{c}" for c in range(1, k))])
        steps = nnunet.NnunetSchedule(epochs=schedule[0], iterations=schedule[1])
        fit = nnunet.fit_in_subprocess(root, 1, steps, threads=threads)
        if fit.model_dir is None:
            raise RuntimeError(fit.error)
        model, _plans, _dataset = nnunet.trained_load(fit.model_dir)
    fit_seconds = time.perf_counter() - t0
    with torch.no_grad():
        val = set_metrics(predict_labels(model, vx), vy, k)
        metrics = set_metrics(predict_labels(model, sx), sy, k)
    return {
        "dataset": name,
        "recipe": "nnunet",
        "labels": labels,
        "pick": None,
        "seed": seed,
        "train_labelled_slices": int(sum(bool(m.any()) for m in ty)),
        "size": int(items[0].image.shape[0]),
        "slices": {"train": len(tx), "validation": len(vx), "test": len(sx)},
        "plan": fit.plan,
        "epochs": schedule[0],
        "epochs_run": schedule[0],
        "steps_per_epoch": schedule[1],
        "best_epoch": schedule[0],  # nnU-Net keeps its final weights
        "validation_dice": val.dice,
        "test": metrics.to_dict(),
        "test_dice": metrics.dice,
        "label_names": {int(a): b for a, b in volume.label_names.items()},
        "train_seconds": round(fit_seconds, 1),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m workers.ml.research.recipe", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--datasets", default=",".join(LOADERS))
    ap.add_argument("--recipes", default=",".join(RECIPES))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--labels", type=int, default=None, help="train on this many random pool slices")
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--first-seed", type=int, default=0, help="seeds run from this one")
    ap.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    ap.add_argument("--pick", choices=PICKS, default="random", help="how --labels slices are chosen")
    ap.add_argument("--nnunet-epochs", type=int, default=40)
    ap.add_argument("--nnunet-iterations", type=int, default=25, help="nnU-Net training steps per epoch")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    rows = []
    runs = [
        (name, recipe, seed)
        for name in args.datasets.split(",")
        for recipe in args.recipes.split(",")
        for seed in range(args.first_seed, args.first_seed + args.seeds)
    ]
    for name, recipe, seed in runs:
        row = run_one(
            name,
            recipe,
            args.threads,
            labels=args.labels,
            seed=seed,
            epochs=args.epochs,
            label_pick=args.pick,
            nnunet_schedule=(args.nnunet_epochs, args.nnunet_iterations),
        )
        per_class = ", ".join(
            f"{row['label_names'].get(c['label'], c['label'])} {c['pooled_dice']:.3f}"
            f" (fp on empty {100 * (c['fp_fraction_empty'] or 0):.2f} %)"
            for c in row["test"]["classes"]
            if c["pooled_dice"] is not None
        )
        print(
            f"{name:18s} {recipe:10s} seed {seed} {row['size']} px, train {row['slices']['train']} slices"
            f" ({row['train_labelled_slices']} with a label): test Dice "
            f"{row['test_dice']:.3f} [{per_class}] best epoch {row['best_epoch']}/{row['epochs_run']}, "
            f"{row['train_seconds']} s",
            flush=True,
        )
        rows.append(row)
        if args.json:
            args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
