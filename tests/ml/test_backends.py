"""The model backend interface (issue 18, item 1): which backend a config names, how each draws the predictive
samples scoring reads (MC dropout, or mirror TTA for a network without dropout), and fitting through it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from workers.ml.al.scoring import MIRRORS, mc_predict_proba, sample_count, score_pool
from workers.ml.backends import BACKENDS, FitJob, backend_for, has_dropout
from workers.ml.models.device import limit_cpu_threads
from workers.ml.models.networks import NetworkConfig, build_network
from workers.ml.models.training import TrainConfig

limit_cpu_threads(1)


def _net(dropout: float) -> nn.Module:
    torch.manual_seed(0)
    return build_network(NetworkConfig(channels=(8, 16, 32), dropout=dropout))


def _images(n: int, size: int = 32, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(1, size, size)).astype(np.float32) for _ in range(n)]


def test_a_config_names_its_backend_and_none_means_the_built_in_one():
    assert backend_for({}).name == "builtin" and backend_for({"backend": None}).name == "builtin"
    assert {backend_for({"backend": n}).name for n in ("builtin", "monai_bundle", "nnunet")} == set(BACKENDS)
    with pytest.raises(ValueError, match="unknown model backend 'x'"):
        backend_for({"backend": "x"})
    assert (
        not BACKENDS["nnunet"].capabilities.warm_starts and not BACKENDS["nnunet"].capabilities.bundle_export
    )
    assert (
        BACKENDS["monai_bundle"].capabilities.bundle_export and BACKENDS["builtin"].capabilities.warm_starts
    )


def test_the_sample_count_is_the_dropout_samples_or_at_most_the_four_mirrorings():
    assert [sample_count(t, "dropout") for t in (1, 5, 9)] == [1, 5, 9]
    assert [sample_count(t, "mirror") for t in (1, 3, 5, 9)] == [1, 3, 4, 4]
    with pytest.raises(ValueError, match="sampling must be one of"):
        sample_count(2, "ensemble")


def test_a_network_without_dropout_is_sampled_by_mirroring_and_its_bald_is_no_longer_zero():
    net, images = _net(0.0), _images(3)
    backend = BACKENDS["builtin"]
    assert not has_dropout(net) and backend.sampling(net) == "mirror"
    assert has_dropout(_net(0.2)) and backend.sampling(_net(0.2)) == "dropout"
    dropout = score_pool(net, images, mc_samples=4, sampling="dropout")
    assert np.all(dropout.bald == 0) and np.all(dropout.variance == 0)  # four equal samples
    mirrored = backend.score(net, images, samples=4)
    assert np.all(mirrored.bald > 0) and np.all(mirrored.variance > 0)  # an untrained net is not symmetric
    np.testing.assert_allclose(
        mirrored.entropy, score_pool(net, images, mc_samples=4, sampling="mirror").entropy
    )


def test_mirror_samples_are_the_flipped_back_softmax_of_each_mirroring():
    """Known answer: the predictive mean over T mirrorings equals the mean of softmax(net(flip(x))) flipped
    back, computed here directly; in input order, for images of two sizes."""
    net = _net(0.0).eval()
    images = [*_images(2, 32), *_images(1, 48, seed=1)]
    got = mc_predict_proba(net, images, mc_samples=3, batch_size=2, sampling="mirror")
    for image, probs in zip(images, got, strict=True):
        x = torch.from_numpy(image)[None]
        with torch.no_grad():
            ref = (
                sum(
                    torch.softmax(net(x.flip(f) if f else x), 1).flip(f) if f else torch.softmax(net(x), 1)
                    for f in MIRRORS[:3]
                )
                / 3
            )
        np.testing.assert_allclose(probs, ref[0].numpy(), rtol=1e-4, atol=1e-6)


def _job(init=None, options=None) -> FitJob:
    rng = np.random.default_rng(0)
    images = _images(4)
    masks = [(rng.random((32, 32)) > 0.7).astype(np.uint8) for _ in range(4)]
    cfg = TrainConfig(epochs=2, batch_size=2, patch_size=(32, 32), max_steps_per_epoch=2, seed=0)
    net_cfg = NetworkConfig(channels=(8, 16, 32), num_classes=2, dropout=0.1)
    return FitJob(net_cfg, cfg, images, masks, images[:2], masks[:2], init=init, options=options or {})


def test_the_built_in_backend_fits_with_progress_and_stops_when_asked():
    epochs: list[int] = []
    fitted = BACKENDS["builtin"].fit(_job(), lambda r: epochs.append(r.epoch), lambda: False)
    assert fitted.model is not None and not fitted.model.training and epochs == [1, 2]
    assert fitted.checkpoint == {} and fitted.extra["epochs_run"] == 2
    stopped = BACKENDS["builtin"].fit(_job(), lambda r: None, lambda: True)
    assert stopped.cancelled and stopped.model is None


def test_the_bundle_backend_fine_tunes_a_copy_of_its_network_and_stores_its_definition():
    bundle_net = _net(0.1)
    before = {k: v.clone() for k, v in bundle_net.state_dict().items()}
    definition = {"_target_": "UNet", "spatial_dims": 2}
    fitted = BACKENDS["monai_bundle"].fit(
        _job(bundle_net, {"network_def": definition}), lambda r: None, lambda: False
    )
    assert fitted.model is not None and fitted.model is not bundle_net
    assert all(torch.equal(before[k], v) for k, v in bundle_net.state_dict().items())  # the import untouched
    assert any(not torch.equal(before[k], v) for k, v in fitted.model.state_dict().items())
    assert fitted.checkpoint == {"network_def": definition} and fitted.extra["fine_tuned_bundle"] is True
    nothing = BACKENDS["monai_bundle"].fit(_job(), lambda r: None, lambda: False)
    assert nothing.model is None and "no imported MONAI bundle" in nothing.error
