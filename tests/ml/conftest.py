"""Shared fixtures for the ML core tests: real MNI152 slices and a tiny white-matter model trained on them.
Both are session-scoped: loading the template takes ~5 s and training ~15-30 s on one thread.
"""

from __future__ import annotations

import pytest

from workers.ml.models.device import limit_cpu_threads
from workers.ml.research.wm_task import (  # noqa: F401  (re-exported for the tests)
    AXIAL_SLICES,
    HELD_OUT_EVERY,
    SLICE_SIZE,
    TrainedWM,
    WMSlices,
    load_wm_slices,
    train_wm_model,
)


@pytest.fixture(scope="session")
def mni_wm_slices() -> WMSlices:
    return load_wm_slices()


@pytest.fixture(scope="session")
def trained_wm_model(mni_wm_slices: WMSlices) -> TrainedWM:
    """A UNet (8, 16, 32, 64) segmenting white matter on 12 slices; 4 held-out slices for evaluation."""
    limit_cpu_threads(1)
    return train_wm_model(mni_wm_slices)
