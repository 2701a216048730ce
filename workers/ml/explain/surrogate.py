"""A global explanation: a small decision tree that mimics *when* the segmentation model fails (or is
uncertain), from per-case features a clinician can read (intensity statistics, predicted area, boundary
sharpness, mean uncertainty).

    feats = np.stack([case_features(img, probs) for img, probs in cases])
    report = fit_surrogate(feats, failure_labels(dice, 0.7))
    print(report.rules); report.fidelity, report.majority_baseline

Fidelity is the tree's agreement with the model's actual outcome on held-out cases; a tree is only worth
showing when it beats the majority-class baseline on the same held-out cases.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage  # type: ignore[import-untyped]

FEATURE_NAMES: tuple[str, ...] = (
    "intensity_mean",
    "intensity_std",
    "intensity_p05",
    "intensity_p95",
    "predicted_area_fraction",
    "boundary_sharpness",
    "mean_uncertainty",
)


def case_features(image: np.ndarray, probs: np.ndarray, *, target_class: int = 1) -> np.ndarray:
    """Features (len(FEATURE_NAMES),) of one case from its prepared image (C, H, W) and the model's
    softmax (K, H, W). Intensity statistics are over all channels; predicted area is the fraction of
    pixels whose argmax is `target_class`; boundary sharpness is the mean gradient magnitude of the
    target probability on the predicted region's boundary (0 without a boundary: soft edges = low);
    mean uncertainty is the mean softmax entropy / log K."""
    image = np.asarray(image, dtype=np.float64)
    probs = np.asarray(probs, dtype=np.float64)
    if image.ndim != 3 or probs.ndim != 3 or image.shape[1:] != probs.shape[1:]:
        raise ValueError(
            f"need image (C, H, W) and probs (K, H, W) of one size; got {image.shape}, {probs.shape}"
        )
    if not 0 <= target_class < probs.shape[0]:
        raise ValueError(f"target_class {target_class} outside [0, {probs.shape[0]})")
    pred = probs.argmax(axis=0) == target_class
    boundary = pred & ~ndimage.binary_erosion(pred)
    gy, gx = np.gradient(probs[target_class])
    sharpness = float(np.hypot(gy, gx)[boundary].mean()) if boundary.any() else 0.0
    k = probs.shape[0]
    p = np.clip(probs, 1e-12, 1.0)
    entropy = -(p * np.log(p)).sum(axis=0) / np.log(k) if k > 1 else np.zeros(probs.shape[1:])
    p05, p95 = np.percentile(image, [5, 95])
    return np.array(
        [image.mean(), image.std(), p05, p95, pred.mean(), sharpness, float(entropy.mean())], dtype=np.float64
    )


def failure_labels(dice: np.ndarray, threshold: float) -> np.ndarray:
    """True where the model fails: case Dice < threshold."""
    return np.asarray(dice, dtype=np.float64) < threshold


def uncertain_labels(uncertainty: np.ndarray, quantile: float = 0.75) -> np.ndarray:
    """True for the cases whose uncertainty is above the given quantile of the set (the "uncertain" ones)."""
    u = np.asarray(uncertainty, dtype=np.float64)
    return u > np.quantile(u, quantile)


@dataclass(frozen=True, eq=False)
class SurrogateReport:
    """rules: sklearn `export_text` of the tree; fidelity: accuracy against the model's outcome on the
    held-out cases; majority_baseline: accuracy of always answering the training majority class on the same
    held-out cases; importances: Gini importance per feature; positive_rate: share of True outcomes."""

    rules: str
    fidelity: float
    majority_baseline: float
    train_fidelity: float
    n_train: int
    n_test: int
    positive_rate: float
    feature_names: tuple[str, ...]
    importances: dict[str, float]
    max_depth: int
    target: str

    @property
    def beats_baseline(self) -> bool:
        return self.fidelity > self.majority_baseline

    def to_dict(self) -> dict[str, object]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__} | {
            "beats_baseline": self.beats_baseline
        }


def _split(outcome: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified train/test indices when both classes have >= 2 cases, else a plain random split."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(outcome))
    counts = np.bincount(outcome.astype(int), minlength=2)
    stratify = outcome if counts.min() >= 2 else None
    train, test = train_test_split(idx, test_size=test_fraction, random_state=seed, stratify=stratify)
    return np.asarray(train), np.asarray(test)


def fit_surrogate(
    features: np.ndarray,
    outcome: np.ndarray,
    *,
    feature_names: tuple[str, ...] = FEATURE_NAMES,
    max_depth: int = 3,
    min_samples_leaf: int = 2,
    test_fraction: float = 0.3,
    seed: int = 0,
    target: str = "model_fails",
) -> SurrogateReport:
    """Fit a DecisionTreeClassifier(max_depth) on a train split of (features (N, F), outcome (N,) bool)
    and measure it on the held-out rest. Preconditions: N >= 4, F == len(feature_names), finite features."""
    from sklearn.tree import DecisionTreeClassifier, export_text

    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(outcome, dtype=bool)
    if x.ndim != 2 or x.shape[0] != y.shape[0] or x.shape[1] != len(feature_names):
        raise ValueError(f"features {x.shape} do not match outcome {y.shape} and {len(feature_names)} names")
    if x.shape[0] < 4 or not np.isfinite(x).all():
        raise ValueError("need >= 4 cases with finite features")
    train, test = _split(y, test_fraction, seed)
    tree = DecisionTreeClassifier(max_depth=max_depth, min_samples_leaf=min_samples_leaf, random_state=seed)
    tree.fit(x[train], y[train])
    majority = bool(y[train].mean() >= 0.5)
    return SurrogateReport(
        rules=export_text(tree, feature_names=list(feature_names), decimals=3),
        fidelity=float((tree.predict(x[test]) == y[test]).mean()),
        majority_baseline=float((y[test] == majority).mean()),
        train_fidelity=float((tree.predict(x[train]) == y[train]).mean()),
        n_train=len(train),
        n_test=len(test),
        positive_rate=float(y.mean()),
        feature_names=tuple(feature_names),
        importances={n: float(v) for n, v in zip(feature_names, tree.feature_importances_, strict=True)},
        max_depth=max_depth,
        target=target,
    )
