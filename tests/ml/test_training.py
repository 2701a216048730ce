"""Training: Dice known answers, reproducibility, warm start, convergence on phantoms, callbacks."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from workers.ml.models.device import limit_cpu_threads
from workers.ml.models.metrics import set_metrics
from workers.ml.models.networks import NetworkConfig
from workers.ml.models.training import EpochReport, TrainConfig, train
from workers.ml.models.transforms import prepare_image
from workers.ml.research.phantoms import PhantomSpec, make_phantoms

limit_cpu_threads(1)

TINY = NetworkConfig(channels=(8, 16, 32), num_res_units=1, dropout=0.1)
FAST = TrainConfig(epochs=2, batch_size=4, lr=1e-2, patch_size=(48, 48), seed=0, max_steps_per_epoch=2)


def _data(n: int, modality: str = "MR", num_classes: int = 2, seed: int = 1, size: int = 64):
    spec = PhantomSpec(size=(size, size), modality=modality, num_classes=num_classes)
    b = make_phantoms(n, seed=seed, spec=spec)
    return [prepare_image(x, modality) for x in b.images], list(b.masks)


@pytest.fixture(scope="module")
def phantom_run():
    images, masks = _data(40)
    cfg = TrainConfig(
        epochs=10, batch_size=8, lr=1e-2, patch_size=(64, 64), early_stopping_patience=3, seed=0
    )
    reports: list[EpochReport] = []
    result = train(TINY, cfg, images[:32], masks[:32], images[32:], masks[32:], progress=reports.append)
    return result, reports, images, masks


def test_validation_dice_known_answers():
    """The Dice training validates with (workers.ml.models.metrics; more known answers there): pooled over
    the set, a class absent from both left out rather than counted 1.0."""
    pred = np.array([[1, 1, 0, 0]])
    truth = np.array([[1, 0, 0, 0]])
    assert [c.pooled_dice for c in set_metrics([pred], [truth], 3).classes] == [pytest.approx(2 / 3), None]
    assert set_metrics([pred], [1 - pred], 2).dice == 0.0
    assert set_metrics([pred, truth], [truth, truth], 2).dice == pytest.approx(2 * 2 / (3 + 2))


def test_training_on_phantoms_reaches_dice_above_0_8(phantom_run):
    result, reports, _, _ = phantom_run
    assert result.best_val_dice > 0.8, [r.val_dice for r in reports]
    assert not result.model.training
    assert result.best_val_dice == max(r.val_dice for r in reports)
    assert reports[result.best_epoch - 1].val_dice == result.best_val_dice


def test_progress_called_once_per_epoch_with_monotonic_epochs(phantom_run):
    result, reports, _, _ = phantom_run
    assert reports == result.history
    assert [r.epoch for r in reports] == list(range(1, len(reports) + 1))
    assert all(r.epochs == 10 and r.seconds > 0 and r.eta_seconds >= 0 for r in reports)
    if not result.stopped_early:
        assert reports[-1].eta_seconds == 0.0


def test_same_seed_same_weights_different_seed_different():
    images, masks = _data(8)
    a = train(TINY, FAST, images, masks, device="cpu").model.state_dict()
    b = train(TINY, FAST, images, masks, device="cpu").model.state_dict()
    c = train(TINY, replace(FAST, seed=1), images, masks).model
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], v) for k, v in c.state_dict().items())


def test_warm_start_has_lower_loss_than_cold_start(phantom_run):
    result, _, images, masks = phantom_run
    cfg = TrainConfig(epochs=1, batch_size=8, lr=1e-3, patch_size=(64, 64), seed=3)
    warm = train(TINY, cfg, images[:32], masks[:32], init_state=result.model.state_dict())
    cold = train(TINY, cfg, images[:32], masks[:32])
    assert warm.history[0].train_loss < cold.history[0].train_loss


def test_early_stopping_with_patience():
    images, masks = _data(6)
    cfg = TrainConfig(epochs=6, batch_size=3, lr=0.0, patch_size=(48, 48), early_stopping_patience=2)
    result = train(TINY, cfg, images[:4], masks[:4], images[4:], masks[4:])  # lr 0: Dice never improves
    assert result.stopped_early and len(result.history) == 3 and result.best_epoch == 1


def test_should_stop_cancels_promptly():
    images, masks = _data(8)
    calls = []

    def stop() -> bool:
        calls.append(1)
        return len(calls) > 3  # three steps run, the fourth poll stops

    cfg = TrainConfig(epochs=5, batch_size=4, patch_size=(48, 48))  # 2 steps per epoch
    result = train(TINY, cfg, images, masks, should_stop=stop)
    assert result.cancelled and not result.stopped_early
    assert len(result.history) == 1 and len(calls) == 4
    assert not result.model.training


def test_rgb_multiclass_and_raw_inputs():
    spec = PhantomSpec(size=(48, 48), modality="RGB", num_classes=3)
    b = make_phantoms(6, seed=2, spec=spec)
    net = NetworkConfig(in_channels=3, num_classes=3, channels=(8, 16, 32))
    cfg = TrainConfig(epochs=1, batch_size=3, patch_size=(32, 32), modality="SM")
    result = train(net, cfg, list(b.images[:4]), list(b.masks[:4]), list(b.images[4:]), list(b.masks[4:]))
    assert 0.0 <= result.best_val_dice <= 1.0
    out = result.model(torch.zeros(1, 3, 48, 48))
    assert out.shape == (1, 3, 48, 48)


def test_rejects_mismatched_inputs():
    images, masks = _data(2)
    with pytest.raises(ValueError):
        train(TINY, FAST, images, masks[:1])
    with pytest.raises(ValueError):
        train(TINY, FAST, images, [m * 0 + 5 for m in masks])  # label >= num_classes
