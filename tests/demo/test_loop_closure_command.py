"""The loop-closure benchmark's own logic (the measurement itself needs a running service: see
docs/results, "Loop closure")."""

import numpy as np
import pytest
from django.core.management.base import CommandError

from hitl.demo.management.commands.loop_closure import SEED, Http, _orientation, _pool_positions


def test_pool_positions_are_distinct_and_never_a_labelled_slice():
    pool = _pool_positions(100)
    labelled = {z for zs in SEED.values() for z in zs}
    assert len(pool) == len(set(pool)) == 100 and not set(pool) & labelled
    with pytest.raises(CommandError):
        _pool_positions(10_000)


@pytest.mark.parametrize("transform", ["identity", "transpose", "rot90", "flip_rows_of_transpose"])
def test_orientation_recovers_how_the_importer_stored_the_slice(transform):
    rng = np.random.default_rng(0)
    source = rng.normal(size=(23, 31))
    labels = (source > 0.5).astype(np.uint8)
    stored_of = {
        "identity": lambda a: a,
        "transpose": lambda a: a.T,
        "rot90": lambda a: np.rot90(a),
        "flip_rows_of_transpose": lambda a: a.T[::-1],
    }[transform]
    orient = _orientation(stored_of(source) * 3.0 + 7.0, source)  # stored intensities may be rescaled
    np.testing.assert_array_equal(orient(labels), stored_of(labels))


def test_orientation_refuses_a_slice_that_is_not_the_source():
    rng = np.random.default_rng(1)
    with pytest.raises(CommandError):
        _orientation(rng.normal(size=(20, 20)), rng.normal(size=(20, 20)))


def test_only_http_addresses_are_called():
    with pytest.raises(CommandError):
        Http("file:///etc/passwd")
