"""Inference: shapes and order, padding, sliding window vs plain, flip TTA."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from workers.ml.models.device import limit_cpu_threads
from workers.ml.models.inference import network_divisor, predict_labels, predict_proba
from workers.ml.models.networks import NetworkConfig, build_network

limit_cpu_threads(1)


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    return build_network(NetworkConfig(channels=(8, 16, 32), dropout=0.2))


class Pointwise(nn.Module):
    """A per-pixel model: its output at a pixel depends on that pixel only, so windows cannot matter."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.tanh(x) * 3.0)


def _images(shapes, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(1, *s)).astype(np.float32) for s in shapes]


def test_shapes_order_and_normalisation(unet):
    images = _images([(37, 50), (32, 32), (37, 50), (20, 9)])
    probs = predict_proba(unet, images, batch_size=2)
    assert [p.shape for p in probs] == [(2, 37, 50), (2, 32, 32), (2, 37, 50), (2, 20, 9)]
    for p in probs:
        assert p.dtype == np.float32 and p.min() >= 0 and p.max() <= 1
        np.testing.assert_allclose(p.sum(axis=0), 1.0, atol=1e-5)
    singles = [predict_proba(unet, [im])[0] for im in images]  # batching must not change results
    for a, b in zip(probs, singles, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    assert not unet.training


def test_padding_matches_manual_padding(unet):
    img = _images([(30, 27)])[0]
    manual = np.pad(img, ((0, 0), (0, 2), (0, 1)), mode="edge")  # divisor 4: 32 x 28
    with torch.inference_mode():
        ref = torch.softmax(unet(torch.from_numpy(manual)[None]), dim=1)[0, :, :30, :27].numpy()
    np.testing.assert_allclose(predict_proba(unet, [img])[0], ref, atol=1e-6)
    assert network_divisor(unet) == 4 and network_divisor(Pointwise()) == 1


def test_sliding_window_equals_plain_inference_for_a_local_model():
    torch.manual_seed(1)
    model = Pointwise()
    images = _images([(70, 45), (33, 90)])
    plain = predict_proba(model, images)
    windowed = predict_proba(model, images, roi_size=(16, 16), batch_size=4)
    for a, b in zip(plain, windowed, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_sliding_window_on_the_unet(unet):
    images = _images([(64, 80)], seed=3)
    plain = predict_proba(unet, images)[0]
    same = predict_proba(unet, images, roi_size=(64, 80))[0]  # not larger than the roi: plain path
    np.testing.assert_array_equal(plain, same)
    windowed = predict_proba(unet, images, roi_size=(32, 32))[0]
    assert windowed.shape == plain.shape
    np.testing.assert_allclose(windowed.sum(axis=0), 1.0, atol=1e-5)
    # Instance norm sees different statistics per window, so only closeness can be asked for.
    assert np.abs(windowed - plain).mean() < 0.1


def test_tta_is_the_mean_of_identity_and_two_flips(unet):
    img = _images([(32, 40)], seed=4)[0]
    tta = predict_proba(unet, [img], tta=True)[0]
    x = torch.from_numpy(img)[None]
    with torch.inference_mode():
        parts = [torch.softmax(unet(x), 1), torch.softmax(unet(x.flip(3)), 1).flip(3)]
        parts.append(torch.softmax(unet(x.flip(2)), 1).flip(2))
    ref = (sum(parts) / 3)[0].numpy()
    assert tta.shape == (2, 32, 40) and tta.min() >= 0 and tta.max() <= 1
    np.testing.assert_allclose(tta, ref, atol=1e-5)
    np.testing.assert_allclose(tta.sum(axis=0), 1.0, atol=1e-5)


def test_tta_with_sliding_window_shape(unet):
    out = predict_proba(unet, _images([(50, 70)]), tta=True, roi_size=(32, 32))[0]
    assert out.shape == (2, 50, 70)
    np.testing.assert_allclose(out.sum(axis=0), 1.0, atol=1e-5)


def test_predict_labels_is_argmax(unet):
    images = _images([(24, 24), (16, 40)], seed=5)
    probs = predict_proba(unet, images)
    labels = predict_labels(unet, images)
    for p, lab in zip(probs, labels, strict=True):
        assert lab.dtype == np.uint8
        np.testing.assert_array_equal(lab, p.argmax(axis=0))


def test_empty_input():
    assert predict_proba(Pointwise(), []) == []
