"""python -m workers.ml.explain_report [--cases 4] [--out DIR]

The explanation quality report: for held-out MNI152 white-matter slices with reference masks, every
method's fidelity (deletion / insertion AUC), localisation (pointing game, energy inside the mask),
consistency (map similarity under small noise and shift) and processing time (ms/case and x one forward
pass), plus the decision-tree surrogate's fidelity; a markdown table, JSON and a PNG plot."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from workers.ml import explanation_quality as q
from workers.ml.device import limit_cpu_threads
from workers.ml.explanations import explain
from workers.ml.surrogate import case_features, failure_labels, fit_surrogate
from workers.ml.wm_task import dice, load_wm_slices, train_wm_model

FAMILIES = {  # method -> the review's family
    "gradcam": "Grad-CAM",
    "saliency": "saliency",
    "smoothgrad": "saliency (SmoothGrad)",
    "lime": "LIME",
    "occlusion": "occlusion",
    "kernel_shap": "SHAP (kernel)",
    "gradient_shap": "SHAP (gradient)",
    "integrated_gradients": "integrated gradients",
    "attention": "attention (AttentionUnet)",
    "gradcam_shap": "hybrid Grad-CAM x SHAP",
    "gradcam_occlusion": "hybrid Grad-CAM x occlusion",
}


def _score_fn(model: torch.nn.Module, region: np.ndarray):
    """Target-class probability averaged over the clean image's predicted region (fixed), in [0, 1]."""
    mask = torch.from_numpy(region.astype(np.float32))

    def score(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            prob = model(torch.from_numpy(batch.astype(np.float32))).softmax(dim=1)[:, 1]
        return ((prob * mask).sum(dim=(1, 2)) / mask.sum().clamp(min=1)).numpy()

    return score


def _forward_ms(model: torch.nn.Module, image: np.ndarray, repeats: int = 5) -> float:
    x = torch.from_numpy(image[None])
    with torch.no_grad():
        model(x)
        t0 = time.perf_counter()
        for _ in range(repeats):
            model(x)
    return (time.perf_counter() - t0) / repeats * 1000


def evaluate_method(model, method: str, images, masks, *, consistency_n: int = 2) -> dict:
    rows = []
    for image, ref in zip(images, masks, strict=True):
        with torch.no_grad():
            region = model(torch.from_numpy(image[None])).argmax(dim=1)[0].numpy() == 1
        t0 = time.perf_counter()
        result = explain(model, image, method, target_class=1)
        seconds = time.perf_counter() - t0
        score = _score_fn(model, region)
        rows.append(
            {
                "deletion_auc": q.deletion_auc(score, image, result.map, steps=16),
                "insertion_auc": q.insertion_auc(score, image, result.map, steps=16),
                "pointing_game": float(q.pointing_game(result.map, ref == 1, tolerance_px=2)),
                "energy_inside": q.energy_inside(result.map, ref == 1),
                "consistency": q.consistency(
                    lambda img: explain(model, img, method, target_class=1).map, image, n=consistency_n
                ),
                "ms": seconds * 1000,
                "x_forward": seconds * 1000 / _forward_ms(model, image),
            }
        )
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


def surrogate_report(model, data, *, noise_levels=(0.0, 0.1, 0.2, 0.3, 0.4), threshold: float = 0.8) -> dict:
    rng = np.random.default_rng(0)
    feats, dices = [], []
    for noise in noise_levels:
        for image, ref in zip(data.images, data.masks, strict=True):
            noisy = (image + rng.normal(0, noise, image.shape)).astype(np.float32)
            with torch.no_grad():
                probs = model(torch.from_numpy(noisy[None])).softmax(dim=1)[0].numpy()
            feats.append(case_features(noisy, probs))
            dices.append(dice(probs.argmax(0) == 1, ref == 1))
    report = fit_surrogate(np.stack(feats), failure_labels(np.array(dices), threshold))
    return {"fidelity": report.fidelity, "majority_baseline": report.majority_baseline, "rules": report.rules}


def run(*, cases: int, out: Path, methods: list[str]) -> dict:
    limit_cpu_threads(1)
    data = load_wm_slices()
    unet = train_wm_model(data)
    attention = train_wm_model(data, arch="attention_unet") if "attention" in methods else None
    _, _, images, masks = data.split()
    images, masks = images[:cases], masks[:cases]
    results = {}
    for method in methods:
        model = attention.model if method == "attention" else unet.model
        results[method] = evaluate_method(model, method, images, masks)
        print(f"{method:22s} " + " ".join(f"{k}={v:.3f}" for k, v in results[method].items()), flush=True)
    report = {
        "task": "MNI152 white matter, 96x96 axial slices",
        "cases": int(len(images)),
        "held_out_dice": {
            "unet": unet.held_out_dice,
            "attention_unet": attention.held_out_dice if attention else None,
        },
        "methods": results,
        "surrogate": surrogate_report(unet.model, data),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    (out / "table.md").write_text(markdown_table(report))
    plot(report, out / "report.png")
    return report


def markdown_table(report: dict) -> str:
    head = "| family | method | deletion AUC (lower better) | insertion AUC | pointing game | energy in mask | consistency | ms/case | x forward |\n"
    head += "| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
    lines = [
        f"| {FAMILIES.get(m, m)} | {m} | {r['deletion_auc']:.3f} | {r['insertion_auc']:.3f} | {r['pointing_game']:.2f} | "
        f"{r['energy_inside']:.3f} | {r['consistency']:.3f} | {r['ms']:.0f} | {r['x_forward']:.1f} |"
        for m, r in report["methods"].items()
    ]
    s = report["surrogate"]
    tail = (
        f"\n\nDecision-tree surrogate (global; predicts Dice < 0.8): held-out fidelity {s['fidelity']:.3f} vs "
        f"majority baseline {s['majority_baseline']:.3f}.\n\n```\n{s['rules']}\n```\n"
    )
    return head + "\n".join(lines) + tail


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report["methods"])
    rows = report["methods"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    for ax, key, title in zip(
        axes,
        ("energy_inside", "insertion_auc", "x_forward"),
        ("energy inside mask", "insertion AUC", "cost (x forward, log)"),
        strict=True,
    ):
        ax.barh(names, [rows[n][key] for n in names], color="#2a6fb0")
        ax.set_title(title)
        if key == "x_forward":
            ax.set_xscale("log")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=4)
    parser.add_argument("--out", type=Path, default=Path("artifacts/explain_report"))
    parser.add_argument("--methods", default=",".join(FAMILIES))
    args = parser.parse_args(argv)
    run(cases=args.cases, out=args.out, methods=[m for m in args.methods.split(",") if m])
    print(f"wrote {args.out / 'table.md'}, report.json and report.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
