"""Known answers for the set metrics, and the reason they exist: an empty predictor on sparse data."""

import math

import numpy as np
import pytest

from workers.ml.models.metrics import set_metrics


def _case(shape=(4, 4), ones=()):
    m = np.zeros(shape, dtype=np.uint8)
    for r, c in ones:
        m[r, c] = 1
    return m


def test_known_answer_pooled_case_mean_and_false_positives_on_empty_cases():
    truth_a = _case(ones=[(0, 0), (0, 1), (1, 0), (1, 1)])
    pred_a = _case(ones=[(0, 0), (0, 1), (3, 3), (3, 2)])  # 2 hits, 2 false positives
    truth_b = _case()  # the class is absent
    pred_b = _case(ones=[(2, 2), (2, 3), (3, 3)])  # 3 false positives on an empty case
    m = set_metrics([pred_a, pred_b], [truth_a, truth_b], 2)
    (cls,) = m.classes
    assert cls.pooled_dice == pytest.approx(2 * 2 / (7 + 4))
    assert cls.case_dice == pytest.approx(0.5) and cls.cases_with_class == 1
    assert (cls.fp_pixels_empty, cls.empty_pixels) == (3, 16)
    assert cls.fp_fraction_empty == pytest.approx(3 / 16)
    assert m.dice == pytest.approx(4 / 11) and m.cases == 2


def test_a_class_in_neither_prediction_nor_truth_is_left_out_not_counted_as_one():
    truth = _case(ones=[(0, 0)])
    m = set_metrics([truth], [truth], 3)  # class 2 appears nowhere
    assert [c.pooled_dice for c in m.classes] == [1.0, None]
    assert m.dice == 1.0
    nothing = set_metrics([_case()], [_case()], 2)
    assert nothing.classes[0].pooled_dice is None and math.isnan(nothing.dice)
    assert nothing.to_dict()["dice"] is None


def test_an_empty_predictor_on_sparse_data_scores_zero():
    """Nine empty slices and one with the structure: the old per-slice mean (absent from both = 1.0) gave
    the empty predictor 0.9; the pooled Dice gives 0."""
    truths = [_case() for _ in range(9)] + [_case(ones=[(1, 1), (1, 2), (2, 1), (2, 2)])]
    empty = [np.zeros_like(t) for t in truths]
    assert set_metrics(empty, truths, 2).dice == 0.0
    finder = [t.copy() for t in truths]
    finder[0][3, 3] = 1  # one false-positive pixel on an empty slice
    found = set_metrics(finder, truths, 2)
    assert found.dice == pytest.approx(8 / 9) and found.classes[0].fp_pixels_empty == 1


def test_a_painter_of_every_pixel_pays_on_the_empty_cases():
    truths = [_case() for _ in range(3)] + [_case(ones=[(0, 0)])]
    painted = [np.ones_like(t) for t in truths]
    m = set_metrics(painted, truths, 2)
    assert m.classes[0].fp_fraction_empty == 1.0 and m.dice == pytest.approx(2 / 65)


def test_shapes_and_lengths_are_checked():
    with pytest.raises(ValueError, match="differ in shape"):
        set_metrics([_case((4, 4))], [_case((4, 5))], 2)
    with pytest.raises(ValueError, match="2 predictions but 1 truths"):
        set_metrics([_case(), _case()], [_case()], 2)


def test_calibration_known_answers():
    from workers.ml.models.metrics import calibration

    truth = np.array([[0, 1], [0, 1]])
    # predicted 0, 1, 0, 0 with confidences 0.9, 0.9, 0.6, 0.6: right, right, right, wrong
    p1 = np.array([[0.1, 0.9], [0.4, 0.6]])
    probs = np.stack([1 - p1, p1])
    probs[:, 1, 1] = [0.6, 0.4]  # the last pixel: class 0 with 0.6 (truth 1: wrong)
    cal = calibration([probs], [truth], bins=10)
    # bin 0.9: 2 pixels, accuracy 1, confidence 0.9 -> 0.2; bin 0.6: 2 pixels, accuracy 0.5, confidence 0.6 -> 0.2
    assert cal.ece == pytest.approx((0.2 + 0.2) / 4) and cal.pixels == 4
    # foreground pixels (truth or prediction > 0): (0, 1) right at 0.9 and (1, 1) wrong at 0.6
    assert cal.ece_foreground == pytest.approx((abs(1 - 0.9) + abs(0 - 0.6)) / 2)


def test_a_perfectly_confident_right_model_has_zero_ece():
    from workers.ml.models.metrics import calibration

    truth = np.array([[0, 1], [0, 0]])
    probs = np.stack([(truth == 0).astype(float), (truth == 1).astype(float)])
    assert calibration([probs], [truth]).ece == 0.0
