"""python -m workers.ml.research.pretrain_bench [--datasets a,b] [--labels 10,20] [--seeds 3] [--json OUT]

A cold start from the unlabelled pool (issue 15, item 4): does self-supervised pretraining of the network
on the pool's own images (workers.ml.models.pretrain: masked-image + denoising reconstruction) beat random
initialisation when version 1 is trained on the first n labels?

Per dataset: native-resolution axial slices and the positional pool / validation / test split of
workers.ml.research.recipe (reused, not copied); the service's `few_labels` recipe with the fingerprint's
plan of patch, batch and depth. Per seed: one pretraining on every pool slice's image (no labels), then per
label count n the first n of a seeded permutation of the pool slices that hold a label (foreground-aware;
the same picks for both arms, nested across n), trained from (a) random initialisation and (b) the
pretrained weights with the same seed, steps, validation slices and head initialisation. Scored by the
pooled test Dice (workers.ml.models.metrics.set_metrics). `--epochs` shortens the recipe for BOTH arms.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from workers.ml.models.config import NetworkConfig, TrainConfig
from workers.ml.models.fingerprint import fingerprint, plan
from workers.ml.models.inference import predict_labels
from workers.ml.models.metrics import set_metrics
from workers.ml.models.pretrain import PretrainReport, head_keys, pretrain
from workers.ml.models.training import train
from workers.ml.models.transforms import prepare_image
from workers.ml.research.recipe import LOADERS, RECIPES, native_slices
from workers.ml.research.sim_data import POOL, TEST, VAL

ARMS = ("random", "pretrained")


def load_dataset(name: str) -> dict[str, Any]:
    """Slices, split and plan exactly as recipe.run_one builds them for `few_labels`."""
    volume = LOADERS[name]()
    items, splits = native_slices(volume)
    prepared = [prepare_image(s.image, volume.modality) for s in items]

    def idx(split: str) -> list[int]:
        return [i for i, sp in enumerate(splits) if sp == split]

    pool, val, test = idx(POOL), idx(VAL), idx(TEST)
    planned = plan(fingerprint([prepared[i].shape for i in pool], [items[i].mask for i in pool]))
    settings = {**RECIPES["few_labels"], **planned}
    channels = tuple(settings.pop("channels"))
    patch = settings["patch_size"]
    settings["patch_size"] = (patch, patch) if isinstance(patch, int) else tuple(patch)
    k = int(volume.labels.max()) + 1
    return {
        "name": name,
        "modality": volume.modality,
        "size": int(items[0].image.shape[0]),
        "images": prepared,
        "masks": [s.mask for s in items],
        "pool": pool,
        "val": val,
        "test": test,
        "labelled_pool": [i for i in pool if np.any(items[i].mask)],
        "settings": settings,
        "net": NetworkConfig(in_channels=1, num_classes=k, channels=channels, num_res_units=1),
    }


def picks(labelled_pool: list[int], n: int, seed: int) -> list[int]:
    """The first n of a seeded permutation of the labelled pool slices (nested across n; capped)."""
    order = np.random.default_rng(seed).permutation(len(labelled_pool))
    return [labelled_pool[int(j)] for j in order[:n]]


def run_dataset(
    name: str,
    labels: list[int],
    seeds: list[int],
    *,
    epochs: int | None,
    pretrain_steps: int,
    log: Callable[[str], None] = print,
    on_row: Callable[[], None] | None = None,
    out: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Every run of one dataset; `out` (filled in place, so a caller can save partial results) or a new
    dict is returned. `on_row()` is called after each finished training run."""
    out = {} if out is None else out
    d = load_dataset(name)
    settings = dict(d["settings"])
    if epochs is not None:
        settings["epochs"] = epochs
    net: NetworkConfig = d["net"]
    imgs, masks = d["images"], d["masks"]
    vx, vy = [imgs[i] for i in d["val"]], [masks[i] for i in d["val"]]
    sx, sy = [imgs[i] for i in d["test"]], [masks[i] for i in d["test"]]
    pool_images = [imgs[i] for i in d["pool"]]
    out.update(
        {
            "dataset": name,
            "size": d["size"],
            "slices": {
                "pool": len(d["pool"]),
                "pool_labelled": len(d["labelled_pool"]),
                "validation": len(vx),
                "test": len(sx),
            },
            "recipe": {
                **settings,
                "patch_size": list(settings["patch_size"]),
                "channels": list(net.channels),
            },
            "pretrain": {"steps": pretrain_steps, "not_pretrained": head_keys(net)},
            "pretrain_seconds": {},
            "runs": [],
        }
    )
    log(
        f"## {name}: {d['size']} px, pool {len(d['pool'])} ({len(d['labelled_pool'])} labelled), "
        f"val {len(vx)}, test {len(sx)}; patch {settings['patch_size']}, batch {settings['batch_size']}, "
        f"channels {net.channels}, {settings['epochs']} epochs x {settings['steps_per_epoch']} steps"
    )
    for seed in seeds:
        t0 = time.perf_counter()
        reports: list[PretrainReport] = []
        state = pretrain(
            pool_images,
            net,
            steps=pretrain_steps,
            patch_size=settings["patch_size"],
            batch_size=settings["batch_size"],
            lr=settings["lr"],
            seed=seed,
            report_every=max(1, pretrain_steps // 4),
            progress=reports.append,
        )
        secs = time.perf_counter() - t0
        out["pretrain_seconds"][str(seed)] = round(secs, 1)
        curve = ", ".join(f"{r.step}: {r.loss:.3f}" for r in reports)
        log(f"{name} seed {seed}: pretrained {pretrain_steps} steps in {secs:.0f} s (loss {curve})")
        for n in labels:
            chosen = picks(d["labelled_pool"], n, seed)
            tx, ty = [imgs[i] for i in chosen], [masks[i] for i in chosen]
            for arm in ARMS:
                cfg = TrainConfig(modality=d["modality"], **{**settings, "seed": seed})
                t1 = time.perf_counter()
                result = train(net, cfg, tx, ty, vx, vy, init_state=state if arm == "pretrained" else None)
                train_s = time.perf_counter() - t1
                metrics = set_metrics(predict_labels(result.model, sx), sy, net.num_classes)
                row = {
                    "dataset": name,
                    "n_labels": n,
                    "n_used": len(chosen),
                    "seed": seed,
                    "arm": arm,
                    "test_dice": metrics.dice,
                    "test": metrics.to_dict(),
                    "validation_dice": result.best_val_dice,
                    "best_epoch": result.best_epoch,
                    "epochs_run": len(result.history),
                    "train_seconds": round(train_s, 1),
                    "picks": chosen,
                }
                out["runs"].append(row)
                log(
                    f"{name} n={n} (used {len(chosen)}) seed {seed} {arm:10s}: test Dice {metrics.dice:.3f}, "
                    f"val {result.best_val_dice:.3f}, best epoch {result.best_epoch}/{len(result.history)}, "
                    f"{train_s:.0f} s"
                )
                if on_row is not None:
                    on_row()
    return out


def _mean_sd(xs: list[float]) -> tuple[float, float]:
    if not xs:
        return float("nan"), float("nan")
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def summarise(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per dataset and n: mean and sd of the test Dice per arm, and the paired difference per seed."""
    rows = []
    for res in results:
        for n in sorted({r["n_labels"] for r in res["runs"]}):
            by = {
                arm: {
                    r["seed"]: r["test_dice"] for r in res["runs"] if r["n_labels"] == n and r["arm"] == arm
                }
                for arm in ARMS
            }
            paired = sorted(set(by["random"]) & set(by["pretrained"]))
            diffs = [by["pretrained"][s] - by["random"][s] for s in paired]
            used = {r["n_used"] for r in res["runs"] if r["n_labels"] == n}
            row: dict[str, Any] = {"dataset": res["dataset"], "n_labels": n, "n_used": max(used)}
            for arm in ARMS:
                m, sd = _mean_sd(list(by[arm].values()))
                row[arm] = {"mean": m, "sd": sd, "seeds": len(by[arm])}
            dm, dsd = _mean_sd(diffs)
            row["difference"] = {
                "mean": dm,
                "sd": dsd,
                "pairs": len(diffs),
                "pretrained_wins": sum(x > 0 for x in diffs),
            }
            rows.append(row)
    return rows


def table(summary: list[dict[str, Any]], results: list[dict[str, Any]]) -> str:
    pre = {
        r["dataset"]: statistics.fmean(r["pretrain_seconds"].values())
        if r["pretrain_seconds"]
        else float("nan")
        for r in results
    }
    lines = [
        "| dataset | labels | random init: test Dice | pool-pretrained: test Dice | difference (paired) "
        "| pretrained wins | pretraining s (mean per seed) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s in summary:
        n = f"{s['n_labels']}" + (f" ({s['n_used']} used)" if s["n_used"] != s["n_labels"] else "")
        r, p, d = s["random"], s["pretrained"], s["difference"]
        lines.append(
            f"| {s['dataset']} | {n} | {r['mean']:.3f} ± {r['sd']:.3f} | {p['mean']:.3f} ± {p['sd']:.3f} "
            f"| {d['mean']:+.3f} ± {d['sd']:.3f} | {d['pretrained_wins']}/{d['pairs']} "
            f"| {pre[s['dataset']]:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m workers.ml.research.pretrain_bench", description=__doc__.split("\n")[2]
    )
    ap.add_argument("--datasets", default="mni152_tissue,totalseg_ct")
    ap.add_argument("--labels", default="10,20")
    ap.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1")
    ap.add_argument("--epochs", type=int, default=None, help="override the recipe's 40 epochs (both arms)")
    ap.add_argument("--pretrain-steps", type=int, default=400)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, args.threads))
    labels = [int(x) for x in args.labels.split(",")]
    seeds = list(range(args.seeds))
    results: list[dict[str, Any]] = []
    started = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - started:7.0f} s] {msg}", flush=True)

    def save() -> None:
        if args.json:
            doc = {
                "command": "python -m workers.ml.research.pretrain_bench "
                + " ".join(argv if argv is not None else sys.argv[1:]),
                "threads": torch.get_num_threads(),
                "summary": summarise(results),
                "results": results,
                "elapsed_seconds": round(time.perf_counter() - started, 1),
            }
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(doc, indent=2))

    for name in args.datasets.split(","):
        current: dict[str, Any] = {"dataset": name, "runs": [], "pretrain_seconds": {}}
        results.append(current)
        run_dataset(
            name,
            labels,
            seeds,
            epochs=args.epochs,
            pretrain_steps=args.pretrain_steps,
            log=log,
            on_row=save,
            out=current,
        )
        save()
    print(table(summarise(results), results), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
