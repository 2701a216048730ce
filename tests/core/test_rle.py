"""The run-length core (hitl.core.rle) and the two formats built on it: the API's row-major label runs
(annotations.services.masks) and COCO's column-major 0/1 counts (tests/workers/test_export.py)."""

import numpy as np
import pytest

from annotations.services.masks import MaskError, mask_decode, rle_encode
from hitl.core.rle import expand_runs, runs


def test_runs_known_answer():
    starts, lengths = runs(np.array([3, 3, 0, 0, 0, 3, 7]))
    assert starts.tolist() == [0, 2, 5, 6] and lengths.tolist() == [2, 3, 1, 1]
    starts, lengths = runs(np.zeros(0, np.uint8))
    assert starts.tolist() == [] and lengths.tolist() == []
    with pytest.raises(ValueError):
        runs(np.zeros((2, 2)))


@pytest.mark.parametrize("dtype", [np.uint8, np.int64, bool])
def test_runs_round_trip(dtype):
    rng = np.random.default_rng(0)
    for size in [0, 1, 2, 17, 1000]:
        flat = rng.integers(0, 3, size=size).astype(dtype)
        starts, lengths = runs(flat)
        assert (lengths > 0).all() and int(lengths.sum()) == size
        assert (flat[starts][1:] != flat[starts][:-1]).all()  # maximal: neighbours differ
        back = expand_runs(flat[starts], lengths)
        assert back.dtype == flat.dtype and np.array_equal(back, flat)


def test_api_rle_known_answer_and_round_trip():
    mask = np.array([[0, 0, 2], [2, 2, 1]], np.uint8)  # row-major runs: 0 x2, 2 x3, 1 x1
    assert rle_encode(mask) == {"format": "rle", "size": [2, 3], "values": [0, 2, 1], "lengths": [2, 3, 1]}
    assert np.array_equal(mask_decode(rle_encode(mask), shape=(2, 3)), mask)
    with pytest.raises(MaskError) as err:
        mask_decode({"format": "rle", "size": [2, 3], "values": [0], "lengths": [5]}, shape=(2, 3))
    assert err.value.code == "invalid_mask"


@pytest.mark.parametrize(
    "lengths",
    [
        [2**127, 1],  # past int64: numpy cannot even hold it
        [2**62, 2**62, 2**62, 2**62, 4],  # each fits, but their int64 sum wraps around to 4
        [-1, 5],
    ],
)
def test_rle_runs_that_overflow_or_wrap_are_a_400_not_a_crash(lengths):
    payload = {"format": "rle", "size": [2, 2], "values": [1] * len(lengths), "lengths": lengths}
    with pytest.raises(MaskError) as err:
        mask_decode(payload, shape=(2, 2))
    assert err.value.code == "invalid_mask"
