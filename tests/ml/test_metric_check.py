import numpy as np

from workers.ml.research.metric_check import check


def test_the_old_per_slice_mean_rewarded_an_empty_predictor_on_sparse_volumes():
    labels = np.zeros((16, 16, 10), np.uint8)
    labels[4:8, 4:8, 3] = 1  # the structure in one slice of ten
    row = check("sparse", labels)
    assert row["slices_without_a_class"] == 9
    assert row["empty"] == {"old_per_slice_mean": 0.9, "pooled": 0.0}
    assert row["truth"] == {"old_per_slice_mean": 1.0, "pooled": 1.0}
    assert row["dilated"]["pooled"] < row["dilated"]["old_per_slice_mean"]
