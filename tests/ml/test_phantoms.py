"""Synthetic phantoms: exact masks, determinism by (seed, index), intensity ranges, speed."""

from __future__ import annotations

import time

import numpy as np
import pytest

from workers.ml.models.transforms import prepare_image
from workers.ml.research.phantoms import PhantomSpec, iter_phantoms, make_phantom, make_phantoms


@pytest.mark.parametrize("modality", ["CT", "MR", "RGB"])
def test_shapes_dtypes_and_labels(modality):
    spec = PhantomSpec(size=(48, 40), modality=modality, num_classes=3)
    b = make_phantoms(12, seed=1, spec=spec)
    assert b.masks.shape == (12, 48, 40) and b.masks.dtype == np.uint8
    if modality == "RGB":
        assert b.images.shape == (12, 48, 40, 3) and b.images.dtype == np.uint8
    else:
        assert b.images.shape == (12, 48, 40) and b.images.dtype == np.float32
    assert set(np.unique(b.masks)) == {0, 1, 2}  # every class shows up somewhere in a dozen cases
    assert all((m > 0).any() for m in b.masks)  # every case has foreground
    prepared = prepare_image(b.images[0], modality)
    assert prepared.shape[0] == (3 if modality == "RGB" else 1) and np.isfinite(prepared).all()


@pytest.mark.parametrize("modality", ["CT", "MR"])
def test_without_noise_and_bias_the_image_encodes_the_mask_exactly(modality):
    spec = PhantomSpec(size=(64, 64), modality=modality, num_classes=4, noise=0.0, bias=0.0)
    b = make_phantoms(6, seed=3, spec=spec)
    for img, mask in zip(b.images, b.masks, strict=True):
        # one intensity per label inside the body (air outside the body is background too)
        for c in range(1, 4):
            if (mask == c).any():
                assert np.ptp(img[mask == c]) < 1e-3
        fg_values = {round(float(img[mask == c][0]), 2) for c in range(1, 4) if (mask == c).any()}
        bg_values = set(np.round(np.unique(img[mask == 0]), 2).tolist())
        assert not fg_values & bg_values  # no foreground label shares an intensity with background


def test_rgb_without_noise_uses_one_colour_per_label():
    spec = PhantomSpec(size=(50, 70), modality="RGB", num_classes=3, noise=0.0, bias=0.0)
    b = make_phantoms(3, seed=4, spec=spec)
    colours = {c: {tuple(px) for px in b.images[b.masks == c]} for c in range(3)}
    assert all(len(v) == 1 for v in colours.values())
    assert len({next(iter(v)) for v in colours.values()}) == 3


def test_ct_and_mr_intensity_ranges():
    ct = make_phantoms(4, seed=0, spec=PhantomSpec(size=(64, 64), modality="CT")).images
    mr = make_phantoms(4, seed=0, spec=PhantomSpec(size=(64, 64), modality="MR")).images
    assert -1100 < ct.min() < -900 and 0 < ct.max() < 600  # air, soft tissue, enhancing organ (HU)
    assert mr.min() >= 0 and 100 < mr.max() < 2000  # magnitude images


def test_deterministic_by_seed_and_index_whatever_the_chunking():
    spec = PhantomSpec(size=(32, 32), modality="MR", num_classes=3)
    whole = make_phantoms(10, seed=9, spec=spec)
    chunks = list(iter_phantoms(10, seed=9, spec=spec, chunk=3))
    np.testing.assert_array_equal(np.concatenate([c.images for c in chunks]), whole.images)
    np.testing.assert_array_equal(np.concatenate([c.masks for c in chunks]), whole.masks)
    img, mask = make_phantom(7, seed=9, spec=spec)
    np.testing.assert_array_equal(img, whole.images[7])
    np.testing.assert_array_equal(mask, whole.masks[7])
    other = make_phantoms(10, seed=10, spec=spec)
    assert not np.array_equal(other.masks, whole.masks)
    assert not np.array_equal(whole.masks[0], whole.masks[1])


def test_invalid_specs_are_rejected():
    with pytest.raises(ValueError):
        PhantomSpec(modality="PET")
    with pytest.raises(ValueError):
        PhantomSpec(num_classes=1)


def test_generation_rate_supports_10000_cases_in_well_under_a_minute():
    """500 of the 10,000 256x256 cases; CPU time, so other processes on the machine matter less."""
    spec = PhantomSpec(size=(256, 256), modality="MR", num_classes=3)
    make_phantoms(4, spec=spec)  # warm-up (noise bank)
    t0 = time.process_time()
    n = sum(len(b.masks) for b in iter_phantoms(500, seed=1, spec=spec))
    per_10k = (time.process_time() - t0) * 10_000 / n
    assert per_10k < 60.0, f"{per_10k:.1f} s CPU per 10,000 cases"
