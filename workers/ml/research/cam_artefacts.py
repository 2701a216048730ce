"""python -m workers.ml.research.cam_artefacts [--models wm,wm_attention,demo] [--out DIR] [--threads 1]

Stripe/checkerboard artefacts of Grad-CAM (issue 15, item 6), before and after, on real MNI152 slices.

Every decoder upsampling of the service's networks (MONAI UNet and AttentionUnet) is a stride-2 transposed
convolution with a 3x3 kernel: even output pixels get one kernel tap per axis, odd ones two (uneven overlap),
so its output carries a period-2 pattern on its own grid, strongest where the input is flat (air). Grad-CAM
on such a layer, bilinearly upsampled, shows it as stripes of period 2 x the scale factor.

Models ("--models"):
  wm            the tests' task (workers.ml.research.wm_task): UNet (8, 16, 32, 64), 96 px, white matter
  wm_attention  the same task with the AttentionUnet
  demo          the service's recipe, shortened: UNet (16, 32, 64, 128), 3 classes (background, grey and
                white matter), 128 px axial slices of every other plane, 10 epochs x 30 steps of
                workers.ml.models.training.train with the few-labels settings; grey and white matter
                explained on the test slices (position-block split of workers.ml.research.sim_data)

Per (layer, antialias) candidate: the two artefact measures below, and the explanation report's own
numbers (workers.ml.explain.report.evaluate_method: pointing game, energy inside the mask, deletion /
insertion AUC, consistency, x one forward), plus the median `cost_forward_units` of 15 Grad-CAM calls.

* stripe index (`stripe_index`): along rows and along columns, the power of the map's 1-D spectrum
  (mean-removed, averaged over the other axis) at the Nyquist frequency of the image grid and of the 2x
  and 4x coarser grids (1/2, 1/4, 1/8 cycles/px: where a period-2 pattern on the image grid, the 1/2 or
  the 1/4 resolution grid lands after bilinear upsampling), divided by the mean power of the 3 bins on
  either side; the maximum over the 6. A map without periodic structure has a smooth spectrum there
  (about 1; sharp edges raise the whole band, not one bin); a checkerboard or stripes make a line (>> 1).
* air share (`air_share`): share of the map's mass over air at least 3 px away from the head (pixels
  within 2 % of the intensity range above the image minimum). Neither tissue class can have evidence
  there, and it is where the clinician saw the stripes.

Writes DIR/cam_artefacts.json and, per model, DIR/<model>_before_after.png (image, old map, new map).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage  # type: ignore[import-untyped]
from torch import nn

from workers.ml.explain.explanations import explain
from workers.ml.explain.report import evaluate_method
from workers.ml.models.device import limit_cpu_threads
from workers.ml.models.networks import cam_layer_name

PROBE_FREQUENCIES = (0.5, 0.25, 0.125)  # cycles / px at the image's resolution
NEIGHBOUR_BINS = 3
AIR_LEVEL = 0.02  # of the image's intensity range, above its minimum
AIR_MARGIN_PX = 3
BEFORE: dict[str, tuple[str, bool]] = {  # arch -> (layer, antialias) before issue 15, item 6
    "unet": ("model.1.submodule.2", False),
    "attention_unet": ("model.1.submodule.1.merge", False),
}
CANDIDATES: dict[str, list[tuple[str, bool]]] = {
    "unet": [
        ("model.1.submodule.2", False),  # before: decoder block (transposed conv + identity residual unit)
        ("model.1.submodule.2", True),
        ("model.1.submodule.2.1.conv", False),  # the conv branch after the upsampling, no identity
        ("model.1", False),  # merged skip-connection features, the head's input
        ("model.1", True),  # after
        ("model.2.0", False),  # the head's own transposed conv (full resolution, K channels)
        ("model.2.0", True),
    ],
    "attention_unet": [
        ("model.1.submodule.1.merge", False),  # before
        ("model.1.submodule.1.merge", True),  # after: same layer, anti-aliased
        ("model.1.upconv", False),  # the outermost transposed conv itself
        ("model.1.merge", True),  # full resolution, but before a 1x1 head: the logit map itself
    ],
}


def stripe_index(heat: np.ndarray) -> float:
    """Spectral-line ratio at the probe frequencies (module docstring); about 1 without periodic
    artefacts. `heat` is (H, W); a constant map gives 1.0."""
    a = np.asarray(heat, dtype=np.float64)
    a = a - a.mean()
    worst = 1.0 if not a.any() else 0.0
    for axis in (0, 1):
        n = a.shape[axis]
        power = (np.abs(np.fft.rfft(a, axis=axis)) ** 2).mean(axis=1 - axis)
        for f in PROBE_FREQUENCIES:
            k = int(round(f * n))
            lo, hi = max(1, k - NEIGHBOUR_BINS), min(len(power) - 1, k + NEIGHBOUR_BINS)
            around = [power[j] for j in range(lo, hi + 1) if j != k]
            if not around or k >= len(power):
                continue
            worst = max(worst, float(power[k] / max(np.mean(around), 1e-30)))
    return worst


def air_mask(image: np.ndarray) -> np.ndarray:
    """(H, W) bool: air (all channels within AIR_LEVEL of the range above the minimum), AIR_MARGIN_PX
    or more from any other pixel."""
    img = np.asarray(image, dtype=np.float64)
    lo, span = img.min(), max(float(img.max() - img.min()), 1e-12)
    air = np.all(img <= lo + AIR_LEVEL * span, axis=0)
    return air & ~ndimage.binary_dilation(~air, iterations=AIR_MARGIN_PX)


def air_share(heat: np.ndarray, image: np.ndarray) -> float:
    """Share of the map's positive mass over air far from the head (`air_mask`); 0.0 for an empty map."""
    pos = np.clip(np.asarray(heat, dtype=np.float64), 0.0, None)
    total = float(pos.sum())
    return 0.0 if total <= 0 else float(pos[air_mask(image)].sum()) / total


@dataclass
class Task:
    name: str
    model: nn.Module
    arch: str
    images: list[np.ndarray]  # prepared (C, H, W)
    masks: list[np.ndarray]  # (H, W) label maps
    targets: list[int]  # the class explained in each (image, mask) pair
    note: dict[str, Any]


def _wm_task(arch: str) -> Task:
    from workers.ml.research.wm_task import load_wm_slices, train_wm_model

    data = load_wm_slices()
    trained = train_wm_model(data, arch=arch)
    _, _, images, masks = data.split()
    name = "wm" if arch == "unet" else "wm_attention"
    note = {"held_out_dice": trained.held_out_dice, "channels": list(trained.net_cfg.channels), "size": 96}
    return Task(name, trained.model, arch, list(images), list(masks), [1] * len(images), note)


def _demo_task(epochs: int = 10, steps_per_epoch: int = 30) -> Task:
    from workers.ml.imaging import datasets
    from workers.ml.models.config import NetworkConfig, TrainConfig
    from workers.ml.models.training import train
    from workers.ml.models.transforms import prepare_image
    from workers.ml.research.sim_data import POOL, TEST, VAL, assign_splits

    volume = datasets.mni152_tissue()
    items = datasets.slices(volume, axes=("axial",), size=128, step=2)
    splits = assign_splits(items)
    prepared = [prepare_image(s.image, volume.modality) for s in items]

    def pick(split: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
        idx = [i for i, sp in enumerate(splits) if sp == split]
        return [prepared[i] for i in idx], [items[i].mask for i in idx]

    (tx, ty), (vx, vy), (sx, sy) = pick(POOL), pick(VAL), pick(TEST)
    cfg = TrainConfig(
        modality=volume.modality,
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        batch_size=8,
        lr=1e-3,
        patch_size=(128, 128),
        early_stopping_patience=epochs,
        fg_oversample=0.33,
        strong_augment=True,
        batch_dice=True,
        poly_lr=True,
    )
    net = NetworkConfig(in_channels=1, num_classes=3, channels=(16, 32, 64, 128), num_res_units=1)
    result = train(net, cfg, tx, ty, vx, vy, device="cpu")
    images, masks, targets = [], [], []
    for x, y in zip(sx, sy, strict=True):
        for t in (1, 2):
            if (y == t).any():
                images.append(x)
                masks.append(y)
                targets.append(t)
    note = {"validation_dice": result.best_val_dice, "channels": list(net.channels), "size": 128}
    note |= {"train_slices": len(tx), "test_slices": len(sx), "steps": epochs * steps_per_epoch}
    return Task("demo", result.model.eval(), "unet", images, masks, targets, note)


def _best_ms(fn: Callable[[], Any], repeats: int) -> float:
    """Least disturbed wall time in ms over `repeats` after a warm-up (as workers.ml.research.bench)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000.0)
    return min(times)


def gradcam_cost(
    model: nn.Module, image: np.ndarray, target: int, layer: str, antialias: bool, repeats: int = 10
) -> float:
    """Grad-CAM (the whole `explain` call) / one batch-1 forward pass, best of `repeats` each: the ratio
    workers.ml.research.bench checks against its 3x target."""
    x = torch.from_numpy(np.asarray(image, dtype=np.float32))[None]
    with torch.inference_mode():
        forward = _best_ms(lambda: model(x), repeats)
    cam = _best_ms(
        lambda: explain(model, image, "gradcam", target_class=target, layer=layer, antialias=antialias),
        repeats,
    )
    return cam / forward


def bench_ratios(size: int = 256, repeats: int = 10) -> dict[str, float]:
    """Grad-CAM / forward as in workers.ml.research.bench (untrained NetworkConfig(), size x size phantom,
    target class 1), before and after, for both architectures."""
    from workers.ml.models.networks import NetworkConfig, build_network
    from workers.ml.models.transforms import prepare_image
    from workers.ml.research.phantoms import PhantomSpec, make_phantoms

    spec = PhantomSpec(size=(size, size), modality="MR")
    image = prepare_image(make_phantoms(1, seed=123, spec=spec).images[0], "MR")
    out = {}
    for arch in ("unet", "attention_unet"):
        torch.manual_seed(0)
        model = build_network(NetworkConfig(arch=arch)).eval()
        old_layer, old_aa = BEFORE[arch]
        out[f"{arch} before"] = gradcam_cost(model, image, 1, old_layer, old_aa, repeats)
        out[f"{arch} after"] = gradcam_cost(model, image, 1, cam_layer_name(model), True, repeats)
    return out


def evaluate(task: Task, layer: str, antialias: bool) -> dict[str, Any]:
    stripes, air = [], []
    for image, target in zip(task.images, task.targets, strict=True):
        heat = explain(
            task.model, image, "gradcam", target_class=target, layer=layer, antialias=antialias
        ).map
        stripes.append(stripe_index(heat))
        air.append(air_share(heat, image))
    report = evaluate_method(
        task.model,
        "gradcam",
        task.images,
        task.masks,
        target_classes=task.targets,
        params={"layer": layer, "antialias": antialias},
    )
    return {
        "layer": layer,
        "antialias": antialias,
        "stripe_index_mean": float(np.mean(stripes)),
        "stripe_index_max": float(np.max(stripes)),
        "stripe_index": [round(s, 3) for s in stripes],
        "air_share_mean": float(np.mean(air)),
        "air_share_max": float(np.max(air)),
        **{k: float(v) for k, v in report.items()},
        "gradcam_cost": gradcam_cost(task.model, task.images[0], task.targets[0], layer, antialias),
    }


def before_after_png(task: Task, path: Path, rows: int = 4) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    old_layer, old_aa = BEFORE[task.arch]
    new_layer = cam_layer_name(task.model)
    picks = np.linspace(0, len(task.images) - 1, min(rows, len(task.images))).round().astype(int)
    fig, axes = plt.subplots(len(picks), 3, figsize=(9, 3 * len(picks)), squeeze=False)
    for row, i in zip(axes, picks, strict=True):
        image, target = task.images[i], task.targets[i]
        old = explain(
            task.model, image, "gradcam", target_class=target, layer=old_layer, antialias=old_aa
        ).map
        new = explain(task.model, image, "gradcam", target_class=target).map
        row[0].imshow(image[0], cmap="gray")
        row[0].contour(task.masks[i] == target, levels=[0.5], colors="r", linewidths=0.5)
        row[0].set_title(f"class {target}", fontsize=8)
        for ax, heat, title in ((row[1], old, f"before: {old_layer}"), (row[2], new, f"after: {new_layer}")):
            ax.imshow(heat, cmap="magma", vmin=0, vmax=0.25)  # clipped at 25 %: background structure shows
            ax.set_title(
                f"{title}\nstripe {stripe_index(heat):.2f}, air {air_share(heat, image):.3f}", fontsize=8
            )
    for ax in axes.ravel():
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def run(models: list[str], out: Path, bench_size: int = 256) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    builders: dict[str, Callable[[], Task]] = {
        "wm": lambda: _wm_task("unet"),
        "wm_attention": lambda: _wm_task("attention_unet"),
        "demo": _demo_task,
    }
    results: dict[str, Any] = {}
    if bench_size:
        results["bench_ratios"] = ratios = bench_ratios(bench_size)
        listed = ", ".join(f"{k} {v:.2f}" for k, v in ratios.items())
        print(f"Grad-CAM / forward, {bench_size} px, NetworkConfig(): {listed}", flush=True)
    for name in models:
        t0 = time.perf_counter()
        task = builders[name]()
        rows = [evaluate(task, layer, aa) for layer, aa in CANDIDATES[task.arch]]
        before_after_png(task, out / f"{name}_before_after.png")
        results[name] = {
            **task.note,
            "arch": task.arch,
            "cases": len(task.images),
            "chosen_layer": cam_layer_name(task.model),
            "candidates": rows,
            "seconds": round(time.perf_counter() - t0, 1),
        }
        print(f"== {name} ({task.arch}, {len(task.images)} cases) {task.note}", flush=True)
        for r in rows:
            print(
                f"  {r['layer']:28s} aa={int(r['antialias'])} stripe {r['stripe_index_mean']:.2f}"
                f" (max {r['stripe_index_max']:.2f}) air {r['air_share_mean']:.3f} (max {r['air_share_max']:.3f})"
                f" pointing {r['pointing_game']:.2f} energy {r['energy_inside']:.3f}"
                f" del {r['deletion_auc']:.3f} ins {r['insertion_auc']:.3f} cons {r['consistency']:.3f}"
                f" x_fwd {r['x_forward']:.2f} best-of-10 {r['gradcam_cost']:.2f}",
                flush=True,
            )
    (out / "cam_artefacts.json").write_text(json.dumps(results, indent=1))
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m workers.ml.research.cam_artefacts", description=__doc__.split("\n")[2]
    )
    ap.add_argument("--models", default="wm,wm_attention,demo")
    ap.add_argument("--out", type=Path, default=Path("artifacts/cam_artefacts"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--bench-size", type=int, default=256, help="image size of the cost ratios (0: skip)")
    args = ap.parse_args(argv)
    limit_cpu_threads(args.threads)
    torch.manual_seed(0)
    run(args.models.split(","), args.out, args.bench_size)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
