"""Self-supervised pretraining on the unlabelled pool (workers.ml.models.pretrain), issue 15 item 4."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workers.ml.models.config import NetworkConfig, TrainConfig
from workers.ml.models.networks import build_network
from workers.ml.models.pretrain import PretrainReport, head_keys, head_prefix, pretrain
from workers.ml.models.training import seed_everything, train
from workers.ml.models.transforms import prepare_image
from workers.ml.research.phantoms import PhantomSpec, make_phantoms

NET = NetworkConfig(in_channels=1, num_classes=3, channels=(8, 16, 32), num_res_units=1, dropout=0.0)


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def pool() -> list[np.ndarray]:
    """Structured 32 x 32 MR phantoms (a body ellipse holding objects), prepared (1, H, W)."""
    batch = make_phantoms(12, seed=3, spec=PhantomSpec(size=(32, 32), modality="MR", num_classes=3))
    return [prepare_image(im, "MR") for im in batch.images]


def _run(pool: list[np.ndarray], **kw) -> dict[str, torch.Tensor]:
    args = {"steps": 4, "patch_size": 32, "batch_size": 4, "lr": 1e-3, "seed": 0, "device": "cpu"}
    return pretrain(pool, NET, **{**args, **kw})


def test_returned_state_loads_strictly_into_the_segmentation_network(pool):
    state = _run(pool)
    seg = build_network(NET)
    own = seg.state_dict()
    assert set(state) == set(own)
    for k, v in state.items():
        assert v.shape == own[k].shape, k
    seg.load_state_dict(state, strict=True)
    assert seg(torch.zeros(1, 1, 32, 32)).shape == (1, NET.num_classes, 32, 32)


def test_body_is_pretrained_and_head_is_trains_own_initialisation(pool):
    state = _run(pool, seed=5)
    seed_everything(5)
    fresh = build_network(NET).state_dict()
    heads = set(head_keys(NET))
    assert heads and all(k.startswith(head_prefix(NET) + ".") for k in heads)
    for k in heads:  # the head random arm and pretrained arm share
        assert torch.equal(state[k], fresh[k]), k
    moved = [k for k in state if k not in heads and not torch.equal(state[k], fresh[k])]
    assert any("weight" in k for k in moved)  # the body carries learned weights


def test_state_is_accepted_by_train_as_init_state(pool):
    state = _run(pool)
    masks = [np.zeros((32, 32), dtype=np.uint8) for _ in pool[:2]]
    masks[0][8:16, 8:16] = 1
    cfg = TrainConfig(epochs=1, batch_size=2, patch_size=(32, 32), seed=0, max_steps_per_epoch=1)
    result = train(NET, cfg, pool[:2], masks, init_state=state, device="cpu")
    assert result.best_epoch == 1


def test_reconstruction_loss_decreases(pool):
    reports: list[PretrainReport] = []
    _run(pool, steps=60, lr=3e-3, report_every=15, progress=reports.append)
    assert [r.step for r in reports] == [15, 30, 45, 60]
    assert reports[-1].fraction == 1.0
    losses = [r.loss for r in reports]
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.8 * losses[0], losses


def test_same_seed_same_weights_other_seed_differs(pool):
    a, b, c = _run(pool, seed=1), _run(pool, seed=1), _run(pool, seed=2)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_cancellation_stops_early_and_returns_a_loadable_state(pool):
    calls = {"n": 0}

    def should_stop() -> bool:
        calls["n"] += 1
        return calls["n"] > 3  # three steps run, then stop

    reports: list[PretrainReport] = []
    state = _run(pool, steps=1000, report_every=1, should_stop=should_stop, progress=reports.append)
    assert calls["n"] == 4
    assert reports[-1].cancelled and reports[-1].step == 3 and reports[-1].fraction < 0.01
    build_network(NET).load_state_dict(state, strict=True)


def test_attention_unet_and_padding_of_small_images():
    cfg = NetworkConfig(in_channels=1, num_classes=2, channels=(8, 16), arch="attention_unet", dropout=0.0)
    small = [np.random.default_rng(0).random((1, 20, 24)).astype(np.float32)]  # padded up to 32 x 32
    state = pretrain(small, cfg, steps=2, patch_size=(32, 32), batch_size=2, seed=0, device="cpu")
    build_network(cfg).load_state_dict(state, strict=True)
    assert head_keys(cfg) == ["model.2.conv.weight", "model.2.conv.bias"]


def test_rejects_wrong_channels_and_indivisible_patch(pool):
    with pytest.raises(ValueError, match="expected prepared"):
        pretrain([np.zeros((32, 32), np.float32)], NET, steps=1, patch_size=32, batch_size=1)
    with pytest.raises(ValueError, match="divisible"):
        pretrain(pool, NET, steps=1, patch_size=30, batch_size=1)
