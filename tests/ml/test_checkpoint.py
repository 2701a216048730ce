"""Checkpoints: bit-exact round trip, safe loading (weights_only), malformed input."""

from __future__ import annotations

import io
import os
import pickle
import zipfile

import numpy as np
import pytest
import torch

from workers.ml.models.checkpoint import checkpoint_from_bytes, checkpoint_to_bytes, read_checkpoint
from workers.ml.models.device import limit_cpu_threads
from workers.ml.models.networks import NetworkConfig, build_network

limit_cpu_threads(1)

CFG = NetworkConfig(in_channels=3, num_classes=4, channels=(8, 16, 32), dropout=0.2)


def _trained_looking_model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_network(CFG)
    with torch.no_grad():  # weights far from init, with awkward float values
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 1e-3).mul_(1.0 + 1e-7)
    return model


def test_round_trip_is_bit_exact_with_config_and_meta():
    model = _trained_looking_model()
    meta = {"version": 3, "val_dice": 0.8123456789, "labels": {"1": "liver"}, "parent": None}
    data = checkpoint_to_bytes(model, CFG, meta)
    loaded, cfg, meta2 = checkpoint_from_bytes(data)
    assert cfg == CFG and meta2 == meta
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape
        assert torch.equal(a[k], b[k]), k
        assert a[k].numpy().tobytes() == b[k].numpy().tobytes()
    assert not loaded.training
    x = torch.randn(1, 3, 16, 16)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert checkpoint_to_bytes(loaded, cfg, meta2) == data  # serialising is deterministic too


def _zip(weights: bytes, config: bytes = b'{"format": 1, "network": {}, "meta": {}}') -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("config.json", config)
        zf.writestr("weights.pt", weights)
    return buf.getvalue()


class _Evil:
    def __reduce__(self):
        return (os.makedirs, (os.environ["HITL_EVIL_DIR"],))


class Custom:
    def __init__(self) -> None:
        self.x = 1


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_loading_rejects_code_execution(tmp_path, monkeypatch):
    target = tmp_path / "pwned"
    monkeypatch.setenv("HITL_EVIL_DIR", str(target))
    buf = io.BytesIO()
    torch.save({"w": torch.zeros(1), "x": _Evil()}, buf)
    with pytest.raises(pickle.UnpicklingError):
        checkpoint_from_bytes(_zip(buf.getvalue()))
    assert not target.exists()
    # and a raw pickle (not a torch zip) with the same payload
    with pytest.raises(pickle.UnpicklingError):
        checkpoint_from_bytes(_zip(pickle.dumps(_Evil())))
    assert not target.exists()


def test_loading_rejects_arbitrary_objects():
    buf = io.BytesIO()
    torch.save({"w": torch.zeros(1), "obj": Custom()}, buf)
    with pytest.raises(pickle.UnpicklingError):
        read_checkpoint(_zip(buf.getvalue()))


def test_loading_rejects_non_state_dicts_and_bad_files():
    buf = io.BytesIO()
    torch.save([torch.zeros(1)], buf)
    with pytest.raises(ValueError):
        read_checkpoint(_zip(buf.getvalue()))
    with pytest.raises(ValueError):
        checkpoint_from_bytes(b"not a zip")
    with pytest.raises(ValueError):
        checkpoint_from_bytes(_zip(b"", config=b'{"format": 99}'))


def test_strict_loading_rejects_mismatched_weights():
    small = build_network(NetworkConfig(channels=(8, 16)))
    data = checkpoint_to_bytes(small, NetworkConfig(channels=(8, 16)), {})
    state, _, meta = read_checkpoint(data)
    buf = io.BytesIO()
    torch.save(state, buf)
    forged = _zip(
        buf.getvalue(),
        config=f'{{"format": 1, "network": {{"channels": [8, 16, 32]}}, "meta": {meta}}}'.encode(),
    )
    with pytest.raises(RuntimeError):
        checkpoint_from_bytes(forged)


def test_meta_must_be_json():
    with pytest.raises(TypeError):
        checkpoint_to_bytes(
            build_network(NetworkConfig(channels=(8, 16))),
            NetworkConfig(channels=(8, 16)),
            {"a": np.zeros(2)},
        )
