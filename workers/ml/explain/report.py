"""The explanation quality report: for cases with reference masks, every method's fidelity (deletion /
insertion AUC), localisation (pointing game, energy inside the reference mask), consistency (map
similarity under small noise and shift) and processing time (ms/case and x one forward pass), plus the
decision-tree surrogate's fidelity; a markdown table, JSON and a PNG plot.

`report_build(model, images, masks, methods=...)` is the reusable core: the CLI
(`python -m workers.ml.research.explain_report`) runs it on held-out MNI152 white-matter slices with a model
it trains itself, the service (`workers.services.explain_report`)
on a project's active model and its own reference-labelled cases. Multi-class models are explained for
each case's target class: the foreground class with the largest reference area."""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from workers.ml.explain import quality as q
from workers.ml.explain.core import (
    model_device,
    model_divisor,
    pad_to_multiple,
    predicted_region,
    synchronize,
)
from workers.ml.explain.explanations import explain
from workers.ml.explain.policy import (  # noqa: F401  (FAMILIES, default_methods: re-exported for the report's users)
    ALL_METHODS,
    ARCH_METHODS,
    FAMILIES,
    MODEL_SPECIFIC_METHODS,
    applies_to_arch,
    default_methods,
    methods_for_arch,
)
from workers.ml.explain.surrogate import case_features, failure_labels, fit_surrogate
from workers.ml.models.networks import attention_gates

SURROGATE_THRESHOLD = 0.8  # the surrogate predicts "the model fails": target-class Dice below this
Progress = Callable[[int, int, str], None]
RowDone = Callable[[str, int, dict[str, float]], None]  # (method, case index, row): a checkpoint


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two boolean masks; 0.0 when both are empty (a missed target counts as a failure)."""
    inter = float(np.logical_and(pred, truth).sum())
    return 2.0 * inter / max(float(pred.sum() + truth.sum()), 1.0)


def skip_reason(model: nn.Module, method: str) -> str | None:
    """Why `method` does not apply to `model` (None when it does). Detected like `explain_attention`:
    by the presence of attention gates."""
    if method in MODEL_SPECIFIC_METHODS and not attention_gates(model):
        archs = " or ".join(repr(a) for a, extra in ARCH_METHODS.items() if method in extra)
        return f"needs an arch={archs} network; this model has no attention gates"
    return None


def target_class_of(mask: np.ndarray) -> int:
    """The foreground class with the largest area in the reference mask (ties: the lowest value).
    Raises ValueError for a mask without foreground: nothing to localise."""
    counts = np.bincount(np.asarray(mask, dtype=np.int64).ravel())
    counts[0] = 0
    if not counts.any():
        raise ValueError("the reference mask has no foreground")
    return int(counts.argmax())


def _probs(model: nn.Module, batch: np.ndarray) -> torch.Tensor:
    """Softmax (N, K, H, W) of a (N, C, H, W) batch on the model's device, padded to the network's
    divisor (like `explain`) and cropped back."""
    x = torch.as_tensor(np.asarray(batch, dtype=np.float32), device=model_device(model))
    h, w = x.shape[-2:]
    with torch.no_grad():
        return model(pad_to_multiple(x, model_divisor(model)))[..., :h, :w].softmax(dim=1)


def _score_fn(model: nn.Module, region: np.ndarray, target_class: int):
    """Target-class probability averaged over a fixed region, in [0, 1]."""
    mask = torch.as_tensor(region.astype(np.float32), device=model_device(model))

    def score(batch: np.ndarray) -> np.ndarray:
        prob = _probs(model, batch)[:, target_class]
        return ((prob * mask).sum(dim=(1, 2)) / mask.sum().clamp(min=1)).cpu().numpy()

    return score


def _region(model: nn.Module, image: np.ndarray, target_class: int) -> np.ndarray:
    """The clean image's predicted region of the target class; the whole image when it is empty (an
    untrained or failing model), as `explain` falls back to."""
    region = predicted_region(_probs(model, image[None])[0], target_class).cpu().numpy()
    return region if region.any() else np.ones_like(region)


def _forward_ms(model: nn.Module, image: np.ndarray, repeats: int = 5) -> float:
    """Milliseconds of one warm forward pass (mean of `repeats`)."""
    _probs(model, image[None])
    device = model_device(model)
    synchronize(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        _probs(model, image[None])
    synchronize(device)
    return (time.perf_counter() - t0) / repeats * 1000


def evaluate_case(
    model: nn.Module,
    method: str,
    image: np.ndarray,
    ref: np.ndarray,
    target: int,
    *,
    consistency_n: int = 2,
    steps: int = 16,
    params: Mapping[str, Any] | None = None,
) -> dict[str, float]:
    """One case's row: deletion/insertion AUC (target-class probability over the predicted region),
    pointing game (0/1, 2 px tolerance) and energy inside `ref == target`, consistency (Pearson under noise
    and shift, `consistency_n` copies), ms and x one forward. `params` go to the method."""
    extra = dict(params or {})
    image = np.asarray(image, dtype=np.float32)
    inside = np.asarray(ref) == target
    t0 = time.perf_counter()
    result = explain(model, image, method, target_class=target, **extra)
    seconds = time.perf_counter() - t0
    score = _score_fn(model, _region(model, image, target), target)

    def explain_map(img: np.ndarray) -> np.ndarray:
        return explain(model, img, method, target_class=target, **extra).map

    return {
        "deletion_auc": q.deletion_auc(score, image, result.map, steps=steps),
        "insertion_auc": q.insertion_auc(score, image, result.map, steps=steps),
        "pointing_game": float(q.pointing_game(result.map, inside, tolerance_px=2)),
        "energy_inside": q.energy_inside(result.map, inside),
        "consistency": q.consistency(explain_map, image, n=consistency_n),
        "ms": seconds * 1000,
        "x_forward": seconds * 1000 / _forward_ms(model, image),
    }


def rows_mean(rows: Sequence[Mapping[str, float | None]]) -> dict[str, float]:
    """The method's metrics: the mean of its case rows per metric (a missing value counts as NaN)."""
    return {k: float(np.mean([np.nan if r[k] is None else r[k] for r in rows])) for k in rows[0]}


def evaluate_method(
    model: nn.Module,
    method: str,
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    *,
    target_classes: Sequence[int],
    consistency_n: int = 2,
    steps: int = 16,
    params: Mapping[str, Any] | None = None,
) -> dict[str, float]:
    """Mean over the cases of `evaluate_case`."""
    rows = [
        evaluate_case(
            model, method, image, ref, target, consistency_n=consistency_n, steps=steps, params=params
        )
        for image, ref, target in zip(images, masks, target_classes, strict=True)
    ]
    return rows_mean(rows)


def surrogate_report(
    model: nn.Module,
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    *,
    target_classes: Sequence[int] | None = None,
    noise_levels: Sequence[float] = (0.0, 0.1, 0.2, 0.3, 0.4),
    threshold: float = SURROGATE_THRESHOLD,
) -> dict[str, Any]:
    """A decision tree predicting "target-class Dice < threshold" from readable case features, fitted
    on every case at every noise level (so 1 case already gives 5 samples); fidelity on held-out
    samples vs the majority-class baseline, and its rules."""
    targets = list(target_classes) if target_classes is not None else [target_class_of(m) for m in masks]
    rng = np.random.default_rng(0)
    feats, dices = [], []
    for noise in noise_levels:
        for image, ref, target in zip(images, masks, targets, strict=True):
            noisy = (image + rng.normal(0, noise, np.shape(image))).astype(np.float32)
            probs = _probs(model, noisy[None])[0].cpu().numpy()
            feats.append(case_features(noisy, probs, target_class=target))
            dices.append(dice(probs.argmax(0) == target, np.asarray(ref) == target))
    report = fit_surrogate(np.stack(feats), failure_labels(np.array(dices), threshold))
    return {
        "fidelity": report.fidelity,
        "majority_baseline": report.majority_baseline,
        "beats_baseline": report.beats_baseline,
        "rules": report.rules,
        "threshold": threshold,
        "n_train": report.n_train,
        "n_test": report.n_test,
    }


def report_build(
    model: nn.Module,
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    *,
    methods: Sequence[str],
    progress: Progress | None = None,
    method_models: Mapping[str, nn.Module] | None = None,
    method_params: Mapping[str, Mapping[str, Any]] | None = None,
    surrogate_cases: tuple[Sequence[np.ndarray], Sequence[np.ndarray]] | None = None,
    consistency_n: int = 2,
    done_rows: Mapping[str, Sequence[Mapping[str, float | None]]] | None = None,
    on_row: RowDone | None = None,
) -> dict[str, Any]:
    """The report (JSON-serialisable): {cases, target_classes, families, methods: {method: metrics},
    skipped: {method: reason}, surrogate}. Methods that do not apply to their model are skipped, not
    failed. The work is one (method, case) row at a time: `done_rows` ({method: rows of its first cases})
    are taken as computed (a resumed report), `on_row(method, case_index, row)` is called after each new
    row (a checkpoint; raising there stops the build) and `progress(done, total, method)` counts rows.
    `method_models` explains some methods with another model (the CLI's AttentionUnet);
    `surrogate_cases` = (images, masks) for the surrogate (default: the same cases).
    Preconditions: >= 1 case, every mask has foreground, method names from ALL_METHODS."""
    unknown = [m for m in methods if m not in ALL_METHODS]
    if unknown:
        raise ValueError(f"unknown explanation methods {unknown}; choose from {ALL_METHODS}")
    if not len(images):
        raise ValueError("need at least one case")
    targets = [target_class_of(m) for m in masks]
    models = {m: (method_models or {}).get(m, model) for m in methods}
    skipped = {m: r for m in methods if (r := skip_reason(models[m], m)) is not None}
    todo = [m for m in methods if m not in skipped]
    rows = {m: list((done_rows or {}).get(m, []))[: len(images)] for m in todo}
    total, done = len(todo) * len(images), sum(len(r) for r in rows.values())
    for method in todo:
        for i in range(len(rows[method]), len(images)):
            row = evaluate_case(
                models[method],
                method,
                images[i],
                masks[i],
                targets[i],
                consistency_n=consistency_n,
                params=(method_params or {}).get(method),
            )
            rows[method].append(row)
            done += 1
            if on_row is not None:
                on_row(method, i, row)
            if progress is not None:
                progress(done, total, method)
    s_images, s_masks = surrogate_cases if surrogate_cases is not None else (images, masks)
    return {
        "cases": len(images),
        "target_classes": targets,
        "families": {m: FAMILIES.get(m, m) for m in methods},
        "methods": {m: rows_mean(rows[m]) for m in todo},
        "skipped": skipped,
        "surrogate": surrogate_report(model, s_images, s_masks),
    }


def _num(value: Any, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def markdown_table(report: dict) -> str:
    head = "| family | method | deletion AUC (lower better) | insertion AUC | pointing game | energy in mask | consistency | ms/case | x forward |\n"
    head += "| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
    lines = [
        f"| {FAMILIES.get(m, m)} | {m} | {_num(r['deletion_auc'], '.3f')} | {_num(r['insertion_auc'], '.3f')} | "
        f"{_num(r['pointing_game'], '.2f')} | {_num(r['energy_inside'], '.3f')} | "
        f"{_num(r['consistency'], '.3f')} | {_num(r['ms'], '.0f')} | {_num(r['x_forward'], '.1f')} |"
        for m, r in report["methods"].items()
    ]
    lines += [
        f"| {FAMILIES.get(m, m)} | {m} | skipped: {why} |" + " |" * 6
        for m, why in report.get("skipped", {}).items()
    ]
    s = report["surrogate"]
    threshold = s.get("threshold", SURROGATE_THRESHOLD)
    tail = (
        f"\n\nDecision-tree surrogate (global; predicts Dice < {threshold}): held-out fidelity "
        f"{s['fidelity']:.3f} vs majority baseline {s['majority_baseline']:.3f}.\n\n```\n{s['rules']}\n```\n"
    )
    return head + "\n".join(lines) + tail


def plot_png(report: dict) -> bytes:
    """The report's bar charts (energy inside mask, insertion AUC, cost) as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["methods"]
    names = list(rows)
    fig, axes = plt.subplots(1, 3, figsize=(15, max(2.5, 1.5 + 0.35 * len(names))))
    for ax, key, title in zip(
        axes,
        ("energy_inside", "insertion_auc", "x_forward"),
        ("energy inside mask", "insertion AUC", "cost (x forward, log)"),
        strict=True,
    ):
        ax.barh(names, [rows[n][key] or 0.0 for n in names], color="#2a6fb0")
        ax.set_title(title)
        if key == "x_forward" and names:
            ax.set_xscale("log")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()
