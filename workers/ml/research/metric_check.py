"""python -m workers.ml.research.metric_check [--json OUT]

Why the pooled Dice (workers.ml.models.metrics) replaced the per-slice mean: on every real labelled volume in
DATA.md, cut into axial slices, the scores of three fixed predictors. `empty` predicts background
everywhere; `dilated` is the truth grown by 3 px (a sloppy but useful model); `truth` is perfect. The old
per-slice mean counted a slice without the class in either map as 1.0, so the empty predictor scored high
wherever most slices are empty."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy import ndimage

from workers.ml.imaging import datasets
from workers.ml.models.metrics import set_metrics


def per_slice_mean(preds: list[np.ndarray], truths: list[np.ndarray], k: int) -> float:
    """The old metric: per slice, Dice of each foreground class with 1.0 when absent from both; mean."""
    scores = []
    for p, t in zip(preds, truths, strict=True):
        row = []
        for c in range(1, k):
            a, b = p == c, t == c
            denom = int(a.sum() + b.sum())
            row.append(1.0 if denom == 0 else 2.0 * float((a & b).sum()) / denom)
        scores.append(np.mean(row))
    return float(np.mean(scores))


def _dilated(t: np.ndarray, k: int) -> np.ndarray:
    out = np.zeros_like(t)
    for c in range(1, k):
        out[ndimage.binary_dilation(t == c, iterations=3) & (out == 0)] = c
    return out


def check(name: str, labels: np.ndarray) -> dict:
    truths = [np.ascontiguousarray(labels[:, :, z]) for z in range(labels.shape[2])]
    k = int(labels.max()) + 1
    row: dict = {"volume": name, "slices": len(truths), "classes": k - 1}
    row["slices_without_a_class"] = sum(1 for t in truths if any(not (t == c).any() for c in range(1, k)))
    for label, preds in (
        ("empty", [np.zeros_like(t) for t in truths]),
        ("dilated", [_dilated(t, k) for t in truths]),
        ("truth", truths),
    ):
        row[label] = {
            "old_per_slice_mean": per_slice_mean(preds, truths, k),
            "pooled": set_metrics(preds, truths, k).dice,
        }
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m workers.ml.research.metric_check", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    loaders = {
        "mni152_tissue": datasets.mni152_tissue,
        "colin27_deep_grey": datasets.colin27_deep_grey,
        "totalseg_ct": datasets.totalseg_ct,
    }
    rows = []
    for name, load in loaders.items():
        try:
            rows.append(check(name, load().labels))
        except FileNotFoundError as exc:  # sample data not fetched (python scripts/fetch_sample_data.py)
            print(f"{name}: skipped ({exc})")
    for r in rows:
        print(
            f"{r['volume']:18s} {r['slices']:4d} slices, {r['slices_without_a_class']:4d} lack a class | "
            + " | ".join(
                f"{p}: old {r[p]['old_per_slice_mean']:.3f} pooled {r[p]['pooled']:.3f}"
                for p in ("empty", "dilated", "truth")
            )
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
