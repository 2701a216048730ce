"""MC-dropout scoring: known answers for entropy/BALD/variance, aggregation, batching, modes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from workers.ml.al.scoring import _case_scores, fast_dropout, mc_dropout, pixel_uncertainty, score_pool
from workers.ml.models.device import limit_cpu_threads
from workers.ml.models.networks import NetworkConfig, build_network

limit_cpu_threads(1)


def _net(dropout: float) -> nn.Module:
    torch.manual_seed(0)
    return build_network(NetworkConfig(channels=(8, 16, 32), dropout=dropout))


def _images(shapes, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(1, *s)).astype(np.float32) for s in shapes]


def test_uniform_two_class_prediction_has_entropy_ln2_and_no_bald():
    samples = torch.full((4, 1, 2, 3, 3), 0.5)
    pu = pixel_uncertainty(samples)
    torch.testing.assert_close(pu.entropy, torch.full((1, 3, 3), math.log(2)))
    assert pu.bald.abs().max() == 0 and pu.variance.abs().max() == 0


def test_disagreeing_confident_samples_have_bald_ln2_and_variance_quarter():
    samples = torch.zeros(2, 1, 2, 1, 1)
    samples[0, 0, 0], samples[1, 0, 1] = 1.0, 1.0  # sample 1 says class 0, sample 2 class 1
    pu = pixel_uncertainty(samples)
    assert pu.entropy.item() == pytest.approx(math.log(2))
    assert pu.bald.item() == pytest.approx(math.log(2))  # all of it is model disagreement
    assert pu.variance.item() == pytest.approx(0.25)


def test_three_class_known_answer():
    p = torch.tensor([0.7, 0.2, 0.1]).reshape(1, 1, 3, 1, 1)
    h = -(0.7 * math.log(0.7) + 0.2 * math.log(0.2) + 0.1 * math.log(0.1))
    assert pixel_uncertainty(p).entropy.item() == pytest.approx(h, rel=1e-6)


def test_bald_zero_without_dropout_and_positive_with_it():
    images = _images([(32, 32)] * 3)
    off = score_pool(_net(0.0), images, mc_samples=4)
    on = score_pool(_net(0.5), images, mc_samples=4)
    assert np.abs(off.bald).max() < 1e-6 and np.abs(off.variance).max() < 1e-10
    assert (on.bald > 1e-4).all() and (on.variance > 0).all()


def test_mc_dropout_enables_only_dropout_and_restores_modes():
    net = _net(0.3)
    net.train()
    norms = [m for m in net.modules() if isinstance(m, nn.modules.instancenorm._InstanceNorm)]
    drops = [m for m in net.modules() if isinstance(m, nn.Dropout)]
    assert norms and drops
    with mc_dropout(net):
        assert all(m.training for m in drops) and not any(m.training for m in norms)
        assert not net.training
    assert all(m.training for m in net.modules())
    assert all("forward" not in vars(m) for m in drops)  # the fast forward is gone again


def test_pool_scores_shapes_ranges_and_confidence_from_mean_probs():
    images = _images([(32, 32), (40, 24), (32, 32), (17, 30), (32, 32)])
    s = score_pool(_net(0.3), images, mc_samples=3, batch_size=2)
    n = len(images)
    for arr in (s.entropy, s.bald, s.variance, s.least_confidence, s.margin, s.foreground_fraction):
        assert arr.shape == (n,) and np.isfinite(arr).all() and (arr >= 0).all()
    assert s.mean_probs.shape == (n, 2) and s.embeddings.shape == (n, 32)
    np.testing.assert_allclose(s.mean_probs.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(s.least_confidence, 1 - s.mean_probs.max(axis=1), atol=1e-6)
    np.testing.assert_allclose(s.margin, 1 - np.abs(s.mean_probs[:, 0] - s.mean_probs[:, 1]), atol=1e-6)
    assert [m.shape for m in s.uncertainty_maps] == [im.shape[1:] for im in images]
    for m, e in zip(s.uncertainty_maps, s.entropy, strict=True):
        assert m.dtype == np.float32 and 0 <= m.min() and m.max() <= 1
        assert float(m.mean()) == pytest.approx(e / math.log(2), rel=1e-4)  # "mean" aggregation


def test_results_do_not_depend_on_batching_or_order():
    net = _net(0.0)  # deterministic, so per-image results must match exactly
    images = _images([(32, 32), (24, 40), (32, 32), (32, 32)], seed=2)
    together = score_pool(net, images, mc_samples=2, batch_size=3)
    for i, img in enumerate(images):
        alone = score_pool(net, [img], mc_samples=2)
        np.testing.assert_allclose(alone.entropy[0], together.entropy[i], rtol=1e-5)
        np.testing.assert_allclose(alone.embeddings[0], together.embeddings[i], rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(alone.uncertainty_maps[0], together.uncertainty_maps[i], atol=1e-5)


def test_embeddings_equal_the_deterministic_bottleneck_without_dropout():
    from workers.ml.models.networks import bottleneck_embedding

    net = _net(0.0).eval()
    images = _images([(32, 32)] * 2, seed=3)
    with torch.inference_mode():
        ref = bottleneck_embedding(net, torch.from_numpy(np.stack(images))).numpy()
    np.testing.assert_allclose(score_pool(net, images, mc_samples=3).embeddings, ref, rtol=1e-4, atol=1e-6)


def test_aggregations_known_answers():
    # one case, 4 pixels: entropy map known, foreground probability known
    p1 = torch.tensor([0.5, 0.5, 0.0, 0.1])  # P(class 1) per pixel, identical samples
    probs = torch.stack([1 - p1, p1]).reshape(1, 1, 2, 2, 2).repeat(2, 1, 1, 1, 1)
    pu = pixel_uncertainty(probs)
    ent = pu.entropy.flatten()
    mean = _case_scores(pu, "mean", 0.25)
    topk = _case_scores(pu, "topk", 0.5)  # the two most uncertain pixels: both ln 2
    fg = _case_scores(pu, "foreground", 0.1)
    assert mean["entropy"].item() == pytest.approx(ent.mean().item())
    assert topk["entropy"].item() == pytest.approx(math.log(2))
    w = p1 / p1.sum()
    assert fg["entropy"].item() == pytest.approx((w * ent).sum().item())
    assert fg["mean_probs"][0, 1].item() == pytest.approx((w * p1).sum().item())
    assert topk["mean_probs"][0, 1].item() == pytest.approx(0.5)
    assert mean["foreground_fraction"].item() == 0.0  # ties go to background in argmax


def test_foreground_aggregation_of_pure_background_is_zero():
    probs = torch.zeros(3, 2, 2, 4, 4)
    probs[:, :, 0] = 1.0
    fg = _case_scores(pixel_uncertainty(probs), "foreground", 0.1)
    assert (fg["entropy"] == 0).all() and (fg["least_confidence"] == 0).all()


def test_t_samples_are_batched_into_few_forward_calls():
    net = _net(0.3)
    calls = []
    handle = net.register_forward_hook(lambda _m, i, _o: calls.append(i[0].shape[0]))
    try:
        score_pool(net, _images([(32, 32)] * 6), mc_samples=5, batch_size=6, max_forward=30)
        assert calls == [30]  # all 6 x 5 passes in one call
        calls.clear()
        score_pool(net, _images([(32, 32)] * 6), mc_samples=5, batch_size=6, max_forward=8)
        assert calls == [8, 8, 8, 6]
    finally:
        handle.remove()


def test_invalid_arguments_and_empty_pool():
    net = _net(0.1)
    with pytest.raises(ValueError):
        score_pool(net, _images([(8, 8)]), aggregation="max")
    with pytest.raises(ValueError):
        score_pool(net, _images([(8, 8)]), mc_samples=0)
    assert score_pool(net, []).entropy.shape == (0,)


def test_fast_dropout_drops_the_right_share_and_keeps_the_mean():
    torch.manual_seed(0)
    x = torch.ones(400, 1000)
    y = fast_dropout(x, 0.3)
    dropped = (y == 0).float().mean().item()
    assert dropped == pytest.approx(0.3, abs=0.005)  # 400k draws: std of the share ~0.0007
    assert y.mean().item() == pytest.approx(1.0, abs=0.01)
    values = torch.unique(y).tolist()
    assert len(values) == 2 and values[0] == 0.0 and values[1] == pytest.approx(1 / 0.7)
    assert torch.equal(fast_dropout(x, 0.0), x)


def test_mc_predict_proba_is_the_mean_of_the_samples_scoring_reads_in_input_order_and_size():
    from workers.ml.al.scoring import mc_predict_proba
    from workers.ml.models.inference import predict_proba

    images = _images([(32, 32), (17, 30), (32, 32)])
    without = mc_predict_proba(_net(0.0), images, mc_samples=3, batch_size=2)
    plain = predict_proba(_net(0.0), images)
    assert [p.shape for p in without] == [(2, 32, 32), (2, 17, 30), (2, 32, 32)]
    for a, b in zip(without, plain, strict=True):  # no dropout: every pass is the deterministic one
        np.testing.assert_allclose(a, b, atol=1e-5)
        np.testing.assert_allclose(a.sum(axis=0), 1.0, atol=1e-5)
    net = _net(0.5)
    torch.manual_seed(1)
    one = mc_predict_proba(net, images, mc_samples=1)
    torch.manual_seed(1)
    many = mc_predict_proba(net, images, mc_samples=8)
    assert not np.allclose(one[0], many[0])  # dropout is on: samples differ, so their mean does too
    with pytest.raises(ValueError):
        mc_predict_proba(net, images, mc_samples=0)
