"""prepare_image known answers, padding round trips, and the MONAI training augmentation."""

from __future__ import annotations

import numpy as np
import pytest

from workers.ml.models.device import limit_cpu_threads
from workers.ml.models.transforms import (
    crop_to,
    ensure_prepared,
    pad_to_multiple,
    prepare_image,
    train_transforms,
)

limit_cpu_threads(1)


def test_ct_window_maps_hu_linearly_to_minus_one_one():
    raw = np.array([[-2000.0, -1000.0, 0.0], [500.0, 1000.0, 3000.0]], dtype=np.float32)
    out = prepare_image(raw, "CT")
    assert out.dtype == np.float32 and out.shape == (1, 2, 3)
    np.testing.assert_allclose(out[0], [[-1.0, -1.0, 0.0], [0.5, 1.0, 1.0]])


def test_mr_percentile_scaling_known_answer():
    raw = np.arange(10000, dtype=np.float32).reshape(100, 100)
    out = prepare_image(raw, "MR")[0]
    lo, hi = 0.01 * 9999, 0.99 * 9999  # numpy's linear percentiles of 0..9999
    assert out.min() == 0.0 and out.max() == 1.0
    np.testing.assert_allclose(out[50, 0], (5000 - lo) / (hi - lo), rtol=1e-5)
    assert (out[0, :99] == 0).all() and (out[-1, -99:] == 1).all()  # clipped tails


def test_constant_and_non_finite_images_give_finite_output():
    assert (prepare_image(np.full((8, 8), 7.0), "XR") == 0).all()
    raw = np.ones((8, 8), dtype=np.float32)
    raw[0, 0], raw[1, 1], raw[2:, :] = np.nan, np.inf, 5.0
    assert np.isfinite(prepare_image(raw, "MR")).all()


def test_rgb_channels_first_and_scaled():
    raw = np.zeros((4, 5, 3), dtype=np.uint8)
    raw[..., 0], raw[..., 1], raw[..., 2] = 255, 51, 0
    out = prepare_image(raw, "SM")
    assert out.shape == (3, 4, 5) and out.dtype == np.float32
    np.testing.assert_allclose(out[:, 0, 0], [1.0, 0.2, 0.0], rtol=1e-6)
    rgba = np.concatenate([raw, np.full((4, 5, 1), 9, np.uint8)], axis=-1)
    np.testing.assert_array_equal(prepare_image(rgba, "SM"), out)


def test_rgb_modality_rejects_grayscale():
    with pytest.raises(ValueError):
        prepare_image(np.zeros((4, 4)), "SM")


def test_ensure_prepared_accepts_prepared_and_raw():
    prepared = prepare_image(np.random.default_rng(0).normal(size=(16, 16)), "MR")
    assert ensure_prepared(prepared, "MR", 1) is prepared or np.array_equal(
        ensure_prepared(prepared, "MR", 1), prepared
    )
    raw_rgb = np.zeros((16, 16, 3), np.uint8)
    assert ensure_prepared(raw_rgb, "SM", 3).shape == (3, 16, 16)
    with pytest.raises(ValueError):
        ensure_prepared(raw_rgb, "SM", 1)


@pytest.mark.parametrize("shape", [(1, 37, 50), (3, 16, 16), (2, 1, 9, 1)])
def test_pad_to_multiple_round_trip(shape):
    arr = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    padded, hw = pad_to_multiple(arr, 8)
    assert padded.shape[-2] % 8 == 0 and padded.shape[-1] % 8 == 0
    assert padded.shape[:-2] == arr.shape[:-2] and hw == arr.shape[-2:]
    np.testing.assert_array_equal(crop_to(padded, hw), arr)
    assert padded.shape[-2] - hw[0] < 8 and padded.shape[-1] - hw[1] < 8


def test_augmentation_keeps_image_and_label_aligned_and_is_seeded():
    rng = np.random.default_rng(2)
    label = (rng.random((1, 40, 52)) > 0.5).astype(np.uint8)
    image = label.astype(np.float32) * 3.0  # image carries the label: alignment is checkable
    outs = []
    for _ in range(2):
        t = train_transforms((32, 32), augment=True, intensity=False)
        t.set_random_state(seed=5)
        outs.append([t({"image": image, "label": label}) for _ in range(6)])
    for a, b in zip(*outs, strict=True):
        img, lab = np.asarray(a["image"]), np.asarray(a["label"])
        assert img.shape == (1, 32, 32) and lab.shape == (1, 32, 32)
        np.testing.assert_array_equal(img, lab * 3.0)
        np.testing.assert_array_equal(img, np.asarray(b["image"]))  # same seed, same draws
    assert len({np.asarray(o["image"]).tobytes() for o in outs[0]}) > 1  # it does vary


def test_augmentation_pads_small_images_to_the_patch():
    t = train_transforms((32, 32), augment=False)
    out = t({"image": np.ones((1, 10, 20), np.float32), "label": np.ones((1, 10, 20), np.uint8)})
    assert np.asarray(out["image"]).shape == (1, 32, 32) and np.asarray(out["label"]).shape == (1, 32, 32)


def test_intensity_augmentation_changes_image_only():
    label = np.ones((1, 16, 16), np.uint8)
    image = np.full((1, 16, 16), 0.5, np.float32)
    t = train_transforms((16, 16), augment=True, intensity=True)
    t.set_random_state(seed=0)
    outs = [t({"image": image, "label": label}) for _ in range(10)]
    assert all((np.asarray(o["label"]) == 1).all() for o in outs)
    assert any(not np.allclose(np.asarray(o["image"]), 0.5) for o in outs)


def test_context_indices_clamp_at_the_ends_of_the_volume():
    from workers.ml.models.transforms import context_indices

    assert context_indices(0, 5, 3) == [0, 0, 1]
    assert context_indices(2, 5, 3) == [1, 2, 3]
    assert context_indices(4, 5, 5) == [2, 3, 4, 4, 4]
    assert context_indices(0, 1, 3) == [0, 0, 0]  # a 2D image: the slice itself three times
    assert context_indices(3, 7, 1) == [3]
    for bad in [(0, 5, 2), (0, 5, 0), (5, 5, 3), (-1, 5, 3)]:
        with pytest.raises(ValueError):
            context_indices(*bad)


def test_prepare_context_stacks_each_neighbour_prepared_on_its_own_with_the_slice_in_the_middle():
    from workers.ml.models.transforms import prepare_context

    rng = np.random.default_rng(0)
    vol = rng.normal(size=(4, 16, 12)).astype(np.float32) * np.arange(1, 5)[:, None, None]
    out = prepare_context(vol, 1, 3, "MR")
    assert out.shape == (3, 16, 12) and out.dtype == np.float32
    for c, z in enumerate([0, 1, 2]):
        np.testing.assert_array_equal(out[c], prepare_image(vol[z], "MR")[0])
    np.testing.assert_array_equal(prepare_context(vol, 2, 1, "MR"), prepare_image(vol[2], "MR"))
    rgb = rng.integers(0, 255, size=(3, 8, 8, 3), dtype=np.uint8)
    out = prepare_context(rgb, 0, 3, "RGB")  # RGB slices: 3 channels per slice
    assert out.shape == (9, 8, 8)
    np.testing.assert_array_equal(out[3:6], prepare_image(rgb[0], "RGB"))
    np.testing.assert_array_equal(out[6:9], prepare_image(rgb[1], "RGB"))
