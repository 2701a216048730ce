"""Tests for workers.ml.explain.surrogate: per-case features by hand, a crafted rule recovered exactly, and a real
failure surrogate for the trained white-matter model on noisy MNI152 slices."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workers.ml.explain.surrogate import (
    FEATURE_NAMES,
    case_features,
    failure_labels,
    fit_surrogate,
    uncertain_labels,
)
from workers.ml.models.device import limit_cpu_threads

limit_cpu_threads(1)


def test_case_features_known_values() -> None:
    image = np.arange(100, dtype=np.float32).reshape(1, 10, 10)  # 0..99
    probs = np.zeros((2, 10, 10))
    probs[0] = 1.0
    probs[1, 2:6, 2:6], probs[0, 2:6, 2:6] = 1.0, 0.0  # a crisp 4x4 square of class 1
    f = dict(zip(FEATURE_NAMES, case_features(image, probs), strict=True))
    assert f["intensity_mean"] == pytest.approx(49.5)
    assert f["intensity_std"] == pytest.approx(np.arange(100).std())
    assert f["intensity_p05"] == pytest.approx(4.95) and f["intensity_p95"] == pytest.approx(94.05)
    assert f["predicted_area_fraction"] == pytest.approx(16 / 100)
    # Boundary ring of the square: 8 edge pixels with |grad| = 0.5 (central difference of a 0->1 step)
    # and 4 corners with hypot(0.5, 0.5).
    assert f["boundary_sharpness"] == pytest.approx((8 * 0.5 + 4 * np.hypot(0.5, 0.5)) / 12)
    assert f["mean_uncertainty"] == pytest.approx(0.0, abs=1e-9)
    uniform = np.full((2, 10, 10), 0.5)
    assert case_features(image, uniform)[FEATURE_NAMES.index("mean_uncertainty")] == pytest.approx(1.0)


def test_labels() -> None:
    np.testing.assert_array_equal(failure_labels(np.array([0.5, 0.7, 0.9]), 0.7), [True, False, False])
    np.testing.assert_array_equal(
        uncertain_labels(np.array([0.1, 0.2, 0.3, 0.9]), 0.5), [False, False, True, True]
    )


def test_crafted_rule_is_recovered_with_full_fidelity() -> None:
    rng = np.random.default_rng(0)
    x = rng.random((200, len(FEATURE_NAMES)))
    fails = x[:, FEATURE_NAMES.index("boundary_sharpness")] < 0.3  # the model "fails on soft boundaries"
    report = fit_surrogate(x, fails, max_depth=2)
    assert report.fidelity == 1.0 and report.majority_baseline < 0.8  # 30% positives -> baseline ~0.7
    assert report.beats_baseline
    assert report.rules.startswith("|--- boundary_sharpness <= 0.3")
    assert max(report.importances, key=report.importances.get) == "boundary_sharpness"
    assert report.n_train + report.n_test == 200 and report.to_dict()["beats_baseline"] is True


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError):
        fit_surrogate(np.zeros((10, 3)), np.zeros(10, dtype=bool))
    with pytest.raises(ValueError):
        case_features(np.zeros((1, 4, 4)), np.zeros((2, 5, 5)))


def _dice(pred: np.ndarray, truth: np.ndarray) -> float:
    return 2.0 * float((pred & truth).sum()) / max(float(pred.sum() + truth.sum()), 1.0)


def test_failure_surrogate_on_real_slices_beats_majority(trained_wm_model) -> None:
    """80 cases: the 16 MNI152 slices at 5 noise levels; "fails" = Dice < 0.8 (59% of cases here)."""
    data, model = trained_wm_model.data, trained_wm_model.model
    rng = np.random.default_rng(0)
    feats, dice = [], []
    for level in (0.0, 0.3, 0.6, 1.0, 1.5):
        noisy = data.images + level * rng.standard_normal(data.images.shape).astype(np.float32)
        with torch.no_grad():
            probs = model(torch.from_numpy(noisy)).softmax(dim=1).numpy()
        for x, p, m in zip(noisy, probs, data.masks, strict=True):
            feats.append(case_features(x, p))
            dice.append(_dice(p.argmax(axis=0) == 1, m == 1))
    fails = failure_labels(np.array(dice), 0.8)
    assert 0.2 < fails.mean() < 0.8  # both outcomes present: the comparison with the baseline means something
    report = fit_surrogate(np.array(feats), fails, max_depth=3)
    print(f"\nfidelity {report.fidelity:.3f} vs majority {report.majority_baseline:.3f}\n{report.rules}")
    assert report.fidelity > report.majority_baseline
    assert report.fidelity >= 0.75
