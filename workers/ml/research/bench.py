"""Cost of the ML core's operations relative to one forward pass, and scoring throughput.

    python -m workers.ml.research.bench [--quick] [--size 256] [--n-score 1000] [--threads 2] [--json OUT]

Prints a table of ms per image and the ratio to one forward pass (batch 1) for forward passes, a
training step, each explanation method (through `workers.ml.explain.explanations.explain` when that module
exists, "n/a" otherwise) and MC-dropout scoring; then times the scoring pipeline (`prepare_image` +
`score_pool`) over ``--n-score`` phantom slices against the same T forward passes done bare (pure model
calls on pre-built batches of the same size, dropout on). Pipeline and bare passes alternate chunk by
chunk so that load from other processes on a shared machine hits both alike. Ratios are the result;
absolute times depend on the machine. Uses the default `NetworkConfig` with random weights.
"""

from __future__ import annotations

import argparse
import importlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from monai.losses import DiceCELoss

from workers.ml.al.scoring import default_max_forward, mc_dropout, score_pool
from workers.ml.models.networks import NetworkConfig, build_network
from workers.ml.models.transforms import prepare_image
from workers.ml.research.phantoms import PhantomSpec, make_phantoms

EXPLAIN_METHODS = ("gradcam", "saliency", "smoothgrad", "integrated_gradients", "occlusion")
TARGETS = {
    "score_seconds_per_1000": 120.0,
    "score_raw_fraction": 0.8,
    "gradcam_ratio": 3.0,
    "saliency_ratio": 3.0,
}


@dataclass(frozen=True)
class Row:
    name: str
    ms_per_image: float | None  # None: not available
    ratio: float | None = None


def _best_ms(fn: Callable[[], Any], repeats: int, per: int = 1) -> float:
    """Best (least disturbed) wall time of `fn` in ms over `repeats`, divided by `per`, after a warm-up.

    The minimum, not the median: on a shared machine other processes only ever add time, so the
    fastest run is the best estimate of the operation's own cost (as `timeit` advises).
    """
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000.0 / per)
    return min(times)


def _forward_rows(model: torch.nn.Module, size: int, repeats: int) -> list[Row]:
    x1, x8 = torch.randn(1, 1, size, size), torch.randn(8, 1, size, size)
    model.eval()
    with torch.inference_mode():
        b1 = _best_ms(lambda: model(x1), repeats)
        b8 = _best_ms(lambda: model(x8), max(1, repeats // 2), per=8)
    return [Row("forward batch 1", b1), Row("forward batch 8 (per image)", b8)]


def _train_row(model: torch.nn.Module, size: int, repeats: int) -> Row:
    x = torch.randn(8, 1, size, size)
    y = (torch.rand(8, 1, size, size) > 0.7).long()
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()

    model.train()
    ms = _best_ms(step, max(1, repeats // 2), per=8)
    model.eval()
    return Row("training step batch 8 (per image)", ms)


def _explain_rows(model: torch.nn.Module, image: np.ndarray, repeats: int) -> list[Row]:
    try:
        mod = importlib.import_module("workers.ml.explain.explanations")
    except ImportError:
        return [Row(m, None) for m in EXPLAIN_METHODS]
    available = set(getattr(mod, "METHODS", ()))
    rows = []
    for method in EXPLAIN_METHODS:
        if method not in available:
            rows.append(Row(method, None))
            continue
        rows.append(Row(method, _best_ms(_explain_call(mod, model, image, method), repeats)))
    return rows


def _explain_call(mod: Any, model: torch.nn.Module, image: np.ndarray, method: str) -> Callable[[], Any]:
    return lambda: mod.explain(model, image, method, target_class=1)


def _mc_row(model: torch.nn.Module, images: list[np.ndarray], mc: int, repeats: int) -> Row:
    ms = _best_ms(
        lambda: score_pool(model, images, mc_samples=mc, batch_size=len(images)), repeats, len(images)
    )
    return Row(f"MC-dropout scoring T={mc} (per image)", ms)


def bench_table(model: torch.nn.Module, size: int, repeats: int, mc: int) -> list[Row]:
    spec = PhantomSpec(size=(size, size), modality="MR")
    batch = make_phantoms(8, seed=123, spec=spec)
    images = [prepare_image(im, "MR") for im in batch.images]
    rows = _forward_rows(model, size, repeats)
    rows.append(_train_row(model, size, repeats))
    rows += _explain_rows(model, images[0], max(1, repeats // 3))
    rows.append(_mc_row(model, images, mc, max(1, repeats // 3)))
    base = rows[0].ms_per_image
    assert base is not None
    return [
        Row(r.name, r.ms_per_image, None if r.ms_per_image is None else r.ms_per_image / base) for r in rows
    ]


def bench_scoring(
    model: torch.nn.Module, n: int, size: int, mc: int, batch_size: int, chunk: int = 100
) -> dict[str, float]:
    """Pipeline (prepare + score_pool) vs. bare MC forward passes, alternating per chunk of slices."""
    spec = PhantomSpec(size=(size, size), modality="MR")
    step = default_max_forward(torch.device("cpu"), batch_size, mc)
    pipeline_s = raw_s = prepare_s = 0.0
    for start in range(0, n, chunk):
        raw = make_phantoms(min(chunk, n - start), seed=7, start=start, spec=spec).images
        t0 = time.perf_counter()
        images = [prepare_image(im, "MR") for im in raw]
        t1 = time.perf_counter()
        score_pool(model, images, mc_samples=mc, batch_size=batch_size)
        t2 = time.perf_counter()
        prepare_s += t1 - t0
        pipeline_s += t2 - t0
        raw_s += _bare_passes(model, len(images) * mc, size, step)
    return {
        "n": n,
        "mc_samples": mc,
        "batch_size": batch_size,
        "forward_batch": step,
        "pipeline_seconds": pipeline_s,
        "prepare_seconds": prepare_s,
        "raw_seconds": raw_s,
        "raw_fraction": raw_s / pipeline_s,
        "seconds_per_1000": pipeline_s * 1000.0 / n,
    }


def _bare_passes(model: torch.nn.Module, passes: int, size: int, step: int) -> float:
    """Seconds for `passes` single-image forward passes in pre-built batches of `step`, dropout on."""
    x = torch.randn(step, 1, size, size)
    tail = x[: passes % step]
    t0 = time.perf_counter()
    with mc_dropout(model), torch.inference_mode():
        for _ in range(passes // step):
            model(x)
        if len(tail):
            model(tail)
    return time.perf_counter() - t0


def _fmt(rows: list[Row]) -> str:
    lines = [f"{'operation':<40} {'ms/image':>10} {'x forward':>10}", "-" * 62]
    for r in rows:
        ms = "n/a" if r.ms_per_image is None else f"{r.ms_per_image:.1f}"
        ratio = "n/a" if r.ratio is None else f"{r.ratio:.2f}"
        lines.append(f"{r.name:<40} {ms:>10} {ratio:>10}")
    return "\n".join(lines)


def _verdicts(rows: list[Row], scoring: dict[str, float]) -> dict[str, bool | None]:
    ratio = {r.name: r.ratio for r in rows}
    gradcam, saliency = ratio.get("gradcam"), ratio.get("saliency")
    return {
        "score_seconds_per_1000 <= 120": scoring["seconds_per_1000"] <= TARGETS["score_seconds_per_1000"],
        "score_raw_fraction >= 0.8": scoring["raw_fraction"] >= TARGETS["score_raw_fraction"],
        "gradcam <= 3x forward": None if gradcam is None else gradcam <= TARGETS["gradcam_ratio"],
        "saliency <= 3x forward": None if saliency is None else saliency <= TARGETS["saliency_ratio"],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(
        prog="python -m workers.ml.research.bench", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--quick", action="store_true", help="small images, few repeats: a smoke run")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--n-score", type=int, default=1000)
    ap.add_argument("--mc", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", metavar="OUT", help="also write the results as JSON to OUT")
    args = ap.parse_args(argv)
    size, n_score, repeats = (32, 8, 1) if args.quick else (args.size, args.n_score, 10)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_network(NetworkConfig()).eval()
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, image {size}x{size}, NetworkConfig()"
    )
    rows = bench_table(model, size, repeats, args.mc)
    print(_fmt(rows))
    scoring = bench_scoring(model, n_score, size, args.mc, args.batch_size, chunk=min(100, n_score))
    print(
        f"\nscoring {scoring['n']} slices {size}x{size}, T={args.mc}, batch {args.batch_size} "
        f"(forward calls of {scoring['forward_batch']}): {scoring['pipeline_seconds']:.1f} s "
        f"({scoring['seconds_per_1000']:.1f} s per 1000; prepare {scoring['prepare_seconds']:.1f} s); "
        f"bare passes {scoring['raw_seconds']:.1f} s -> {100 * scoring['raw_fraction']:.0f}% of raw throughput"
    )
    verdicts = _verdicts(rows, scoring)
    for name, ok in verdicts.items():
        print(f"target {name}: {'n/a' if ok is None else ('met' if ok else 'NOT met')}")
    result = {
        "size": size,
        "threads": args.threads,
        "rows": [asdict(r) for r in rows],
        "scoring": scoring,
        "targets": verdicts,
    }
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=2)
    return result


if __name__ == "__main__":
    main()
