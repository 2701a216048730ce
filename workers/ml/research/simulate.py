"""Active-learning simulation on already-labelled data: which query strategy saves the most labels?

    python -m workers.ml.research.simulate --dataset colin27_deep_grey \\
        --strategies random,fg_random,entropy,bald,committee,diverse --seeds 3 \\
        --budget 60 --batch 10 --initial 10 --out artifacts/simulation/colin27_deep_grey [--quick]

Writes ``<dataset>.json`` (config, split sizes, learning curves per strategy and seed, full-data Dice,
labels needed to reach 95% of the full-data test Dice) and ``<dataset>.png`` into --out, and prints
the labels-to-95% table with the ratio to random. The test split is only ever evaluated, never used to
choose anything (model selection uses the validation split).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from workers.ml.al.strategies import STRATEGIES
from workers.ml.models.device import limit_cpu_threads
from workers.ml.models.networks import NetworkConfig
from workers.ml.research.sim_data import SimTask, TaskSpec, build_task
from workers.ml.research.sim_loop import (
    LoopConfig,
    RealBackend,
    RunResult,
    full_data_dice,
    run_strategy,
    start_seed,
)

TARGET_FRACTION = 0.95
DEFAULT_STRATEGIES = "random,fg_random,entropy,bald,committee,diverse"
# Slice sampling per dataset, sized so a full run (6 strategies x 3 seeds, budget 100) takes ~27 min on one
# CPU thread: 64 px slices, a pool of ~150-200 slices.
TASK_PRESETS = {
    "colin27_deep_grey": TaskSpec("colin27_deep_grey", size=64, step=1, slab_margin=12),
    "totalseg_ct": TaskSpec("totalseg_ct", size=64, step=1),
    "mni152_tissue": TaskSpec("mni152_tissue", size=64, step=3),
}
QUICK_TASK: dict[str, Any] = {"size": 32, "step": 4, "axes": ("axial",)}
QUICK_LOOP: dict[str, Any] = {
    "net": NetworkConfig(channels=(4, 8, 16), dropout=0.1),
    "steps_per_round": 2,
    "steps_per_epoch": 2,
    "full_steps": 4,
    "mc_samples": 2,
}


def labels_to_target(labelled: list[int], dice: list[float], target: float) -> int | None:
    """The first labelled count whose test Dice reaches `target`; None if the curve never does."""
    for n, d in zip(labelled, dice, strict=True):
        if d >= target:
            return n
    return None


def summarise(runs: dict[str, list[RunResult]], full: list[float]) -> dict[str, Any]:
    """Labels-to-95% per strategy: per seed, mean over seeds (None unless every seed reached it), ratio."""
    target = TARGET_FRACTION * float(np.mean(full))
    table: dict[str, Any] = {}
    for name, seed_runs in runs.items():
        per_seed = [labels_to_target(r.labelled, r.test_dice, target) for r in seed_runs]
        reached = [n for n in per_seed if n is not None]
        mean = float(np.mean(reached)) if reached and len(reached) == len(per_seed) else None
        # Secondary, less strict: where the seed-averaged curve first reaches the target.
        mean_curve = np.mean([r.test_dice for r in seed_runs], axis=0).tolist()
        on_mean = labels_to_target(seed_runs[0].labelled, mean_curve, target)
        table[name] = {
            "per_seed": per_seed,
            "reached_seeds": len(reached),
            "mean": mean,
            "mean_curve": on_mean,
        }
    base = table.get("random", {}).get("mean")
    for row in table.values():
        row["ratio_to_random"] = row["mean"] / base if row["mean"] is not None and base else None
    random_final = _match_random_final(runs, table)
    return {
        "target_dice": target,
        "full_data_dice": float(np.mean(full)),
        "random_final_dice": random_final,
        "strategies": table,
    }


def _match_random_final(runs: dict[str, list[RunResult]], table: dict[str, Any]) -> float | None:
    """Secondary measure, for when the 95% target is out of reach within the budget: the labels each
    strategy's seed-mean curve needs to reach the Dice that random reaches with the whole budget (seed
    mean), as `labels_to_random_final` and a fraction of the budget. Sets the rows; returns that Dice."""
    if "random" not in runs:
        return None
    random_final = float(np.mean([r.test_dice[-1] for r in runs["random"]]))
    for name, seed_runs in runs.items():
        curve = np.mean([r.test_dice for r in seed_runs], axis=0).tolist()
        n = labels_to_target(seed_runs[0].labelled, curve, random_final)
        table[name]["labels_to_random_final"] = n
        table[name]["fraction_of_budget"] = n / seed_runs[0].labelled[-1] if n is not None else None
    return random_final


def format_table(summary: dict[str, Any], budget: int) -> str:
    lines = [
        f"full-data test Dice {summary['full_data_dice']:.3f}; target (95%) {summary['target_dice']:.3f}",
        f"{'strategy':<18}{'labels to 95%':>16}{'per seed':>22}{'ratio to random':>18}{'mean curve':>12}",
    ]
    for name, row in summary["strategies"].items():
        mean = (
            f"{row['mean']:.1f}" if row["mean"] is not None else f"not reached ({row['reached_seeds']} seeds)"
        )
        per_seed = ",".join(str(n) if n is not None else f">{budget}" for n in row["per_seed"])
        ratio = f"{row['ratio_to_random']:.2f}" if row["ratio_to_random"] is not None else "-"
        on_mean = str(row["mean_curve"]) if row["mean_curve"] is not None else f">{budget}"
        lines.append(f"{name:<18}{mean:>16}{per_seed:>22}{ratio:>18}{on_mean:>12}")
    if summary.get("random_final_dice") is not None:
        lines.append(
            f"labels to random's Dice at the full budget ({summary['random_final_dice']:.3f}), mean curves:"
        )
        lines += [
            f"  {name:<16}{row['labels_to_random_final'] if row['labels_to_random_final'] is not None else f'>{budget}':>6}"
            for name, row in summary["strategies"].items()
        ]
    return "\n".join(lines)


def plot_curves(runs: dict[str, list[RunResult]], summary: dict[str, Any], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5))
    for name, seed_runs in runs.items():
        x = np.asarray(seed_runs[0].labelled)
        y = np.asarray([r.test_dice for r in seed_runs])
        (line,) = ax.plot(x, y.mean(axis=0), marker="o", ms=3, label=name)
        ax.fill_between(x, y.min(axis=0), y.max(axis=0), color=line.get_color(), alpha=0.15)
    ax.axhline(summary["full_data_dice"], color="k", lw=1, label="full data")
    ax.axhline(summary["target_dice"], color="k", ls="--", lw=1, label="95% of full data")
    ax.set_xlabel("labelled slices")
    ax.set_ylabel("test Dice (mean over foreground classes)")
    ax.set_title(f"{title}: mean and min/max over {len(next(iter(runs.values())))} seeds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def simulate(
    task: SimTask, cfg: LoopConfig, strategies: list[str], seeds: int, log: Any = print
) -> tuple[dict[str, list[RunResult]], list[float], float]:
    """All strategies x seeds on one task, plus the full-data model per seed. Returns (runs, full, secs)."""
    t0 = time.perf_counter()
    backend = RealBackend(cfg, task.num_classes, task.modality)
    runs: dict[str, list[RunResult]] = {s: [] for s in strategies}
    full: list[float] = []
    for seed in range(seeds):
        full.append(full_data_dice(backend, task, cfg, seed))
        log(f"[{task.name}] seed {seed}: full-data test Dice {full[-1]:.3f}")
        start = start_seed(backend, task, cfg, seed)
        for name in strategies:
            result = run_strategy(backend, task, cfg, name, seed, start)
            runs[name].append(result)
            curve = " ".join(f"{n}:{d:.3f}" for n, d in zip(result.labelled, result.test_dice, strict=True))
            log(f"[{task.name}] seed {seed} {name:<16} {result.seconds:6.1f}s  {curve}")
    return runs, full, time.perf_counter() - t0


def output_paths(out: Path, dataset: str) -> tuple[Path, Path]:
    """Named after the dataset, so runs of several datasets can share one --out folder."""
    return out / f"{dataset}.json", out / f"{dataset}.png"


def write_results(
    out: Path,
    task: SimTask,
    spec: TaskSpec,
    cfg: LoopConfig,
    runs: dict[str, list[RunResult]],
    full: list[float],
) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    summary = summarise(runs, full)
    config = asdict(cfg)
    config["net"] = cfg.net.to_dict()
    doc = {
        "dataset": task.name,
        "task": asdict(spec),
        "loop": config,
        "split": {
            "pool": len(task.pool),
            "val": len(task.val),
            "test": len(task.test),
            "dropped": task.dropped,
        },
        "classes": {str(k): v for k, v in task.label_names.items()},
        "full_data_test_dice": full,
        "summary": summary,
        "curves": {name: [asdict(r) for r in seed_runs] for name, seed_runs in runs.items()},
    }
    json_path, png_path = output_paths(out, task.name)
    json_path.write_text(json.dumps(doc, indent=1))
    plot_curves(runs, summary, task.name, png_path)
    return doc


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m workers.ml.research.simulate", description=__doc__.split("\n")[0]
    )
    p.add_argument("--dataset", required=True, choices=sorted(TASK_PRESETS))
    p.add_argument("--strategies", default=DEFAULT_STRATEGIES)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument(
        "--budget", type=int, default=60, help="labelled pool slices at the end, seed set included"
    )
    p.add_argument("--batch", type=int, default=10, help="slices queried per round")
    p.add_argument("--initial", type=int, default=10, help="seed set size")
    p.add_argument("--seed-strategy", default="coldstart", choices=("coldstart", "random"))
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--threads", type=int, default=int(os.environ.get("HITL_TORCH_THREADS", "1")))
    p.add_argument(
        "--recipe", action="store_true", help="train every round with the service's few-labels recipe"
    )
    p.add_argument("--quick", action="store_true", help="tiny slices, net and epochs: a smoke run for tests")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    unknown = [s for s in strategies if s not in STRATEGIES or s == "coldstart"]
    if unknown:
        print(f"unknown strategies {unknown}; choose from {[s for s in STRATEGIES if s != 'coldstart']}")
        return 2
    limit_cpu_threads(args.threads)
    spec = TASK_PRESETS[args.dataset]
    cfg = LoopConfig(
        initial=args.initial,
        batch=args.batch,
        budget=args.budget,
        seed_strategy=args.seed_strategy,
        recipe=args.recipe,
    )
    if args.quick:
        spec = replace(spec, **QUICK_TASK)
        cfg = replace(cfg, **QUICK_LOOP)
    task = build_task(spec)
    print(f"[{task.name}] pool {len(task.pool)} / val {len(task.val)} / test {len(task.test)} slices "
          f"({task.dropped} boundary slices dropped), {task.num_classes - 1} foreground classes", flush=True)  # fmt: skip
    runs, full, seconds = simulate(task, cfg, strategies, args.seeds, log=lambda m: print(m, flush=True))
    doc = write_results(args.out, task, spec, cfg, runs, full)
    print(format_table(doc["summary"], cfg.budget))
    json_path, png_path = output_paths(args.out, task.name)
    print(f"[{task.name}] {seconds:.0f} s; wrote {json_path} and {png_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
