"""Tests for the reusable explanation report core (`report_build`, `evaluate_method`): values in range on
a tiny real multi-class network, the target class chosen by reference area (known answer with a
hand-made model), methods that do not fit the model skipped with a reason, progress after each method."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from workers.ml.explain.report import (
    default_methods,
    evaluate_method,
    markdown_table,
    plot_png,
    report_build,
    skip_reason,
    target_class_of,
)
from workers.ml.models.networks import NetworkConfig, build_network
from workers.ml.models.transforms import prepare_image
from workers.ml.research.phantoms import PhantomSpec, make_phantoms


class BrightIsClassTwo(nn.Module):
    """Logits (B, 3, H, W) = (0, 0, 10 * image): class 2 wherever the image is bright, and the class-2
    score's gradient is exactly the bright region; classes 0 and 1 carry no signal at all."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        zeros = torch.zeros_like(x[:, :1])
        return torch.cat([zeros, zeros, 10 * x[:, :1]], dim=1)


def _square_case() -> tuple[np.ndarray, np.ndarray]:
    """A bright 8x8 square labelled 2 and a smaller dark 3x3 patch labelled 1."""
    image = np.zeros((1, 24, 24), dtype=np.float32)
    image[0, 4:12, 4:12] = 1.0
    mask = np.zeros((24, 24), dtype=np.uint8)
    mask[4:12, 4:12] = 2
    mask[18:21, 18:21] = 1
    return image, mask


@pytest.fixture(scope="module")
def phantom_cases():
    batch = make_phantoms(2, seed=3, spec=PhantomSpec(size=(32, 32), modality="MR", num_classes=3))
    images = [prepare_image(img, "MR") for img in batch.images]
    return images, list(batch.masks)


@pytest.fixture(scope="module")
def tiny_unet():
    torch.manual_seed(0)
    return build_network(NetworkConfig(num_classes=3, channels=(4, 8, 16))).eval()


def test_target_class_is_the_largest_foreground_class():
    _, mask = _square_case()
    assert target_class_of(mask) == 2
    assert target_class_of(np.array([[0, 1, 1, 2, 2]])) == 1  # a tie goes to the lower class
    with pytest.raises(ValueError, match="no foreground"):
        target_class_of(np.zeros((4, 4), dtype=np.uint8))


def test_localisation_uses_the_target_class_of_a_multi_class_mask():
    image, mask = _square_case()
    row = evaluate_method(BrightIsClassTwo(), "saliency", [image], [mask], target_classes=[2])
    # the map is exactly the bright square = the class-2 reference: every bit of energy inside, peak hits
    assert row["energy_inside"] == pytest.approx(1.0) and row["pointing_game"] == 1.0
    # class 1 has no signal: a flat map points nowhere and has no energy in the class-1 patch
    other = evaluate_method(BrightIsClassTwo(), "saliency", [image], [mask], target_classes=[1])
    assert other["energy_inside"] == 0.0 and other["pointing_game"] == 0.0


def test_report_on_two_cases_is_in_range_and_skips_what_does_not_fit(phantom_cases, tiny_unet):
    images, masks = phantom_cases
    calls = []
    report = report_build(
        tiny_unet,
        images,
        masks,
        methods=["gradcam", "saliency", "uncertainty", "attention"],
        progress=lambda done, total, m: calls.append((done, total, m)),
    )
    # one call per (method, case) row
    assert calls == [
        (i + 1, 6, m) for i, m in enumerate(["gradcam"] * 2 + ["saliency"] * 2 + ["uncertainty"] * 2)
    ]
    assert set(report["methods"]) == {"gradcam", "saliency", "uncertainty"}
    assert "attention gates" in report["skipped"]["attention"]
    assert report["cases"] == 2 and report["target_classes"] == [target_class_of(m) for m in masks]
    for row in report["methods"].values():
        assert 0 <= row["deletion_auc"] <= 1 and 0 <= row["insertion_auc"] <= 1
        assert row["pointing_game"] in (0.0, 0.5, 1.0)  # 0/1 per case, averaged over 2
        assert 0 <= row["energy_inside"] <= 1 and -1 <= row["consistency"] <= 1
        assert row["ms"] > 0 and row["x_forward"] > 0
    s = report["surrogate"]
    assert 0 <= s["fidelity"] <= 1 and 0 <= s["majority_baseline"] <= 1 and "class" in s["rules"]
    assert json.loads(json.dumps(report)) == report  # storable as JSON as it is
    table = markdown_table(report)
    assert "| uncertainty |" in table and "skipped: needs an arch='attention_unet'" in table
    assert plot_png(report)[:8] == b"\x89PNG\r\n\x1a\n"


UNTIMED = ("deletion_auc", "insertion_auc", "pointing_game", "energy_inside", "consistency")


def test_a_build_stopped_at_a_checkpoint_resumes_from_its_rows_to_the_same_report(phantom_cases, tiny_unet):
    images, masks = phantom_cases
    methods = ["saliency", "uncertainty"]
    whole = report_build(tiny_unet, images, masks, methods=methods)
    saved: dict[str, list] = {}

    class Killed(Exception):
        pass

    def on_row(method, index, row):  # checkpoint each row; the worker dies after the third
        saved.setdefault(method, []).append(row)
        assert index == len(saved[method]) - 1
        if sum(len(r) for r in saved.values()) == 3:
            raise Killed

    with pytest.raises(Killed):
        report_build(tiny_unet, images, masks, methods=methods, on_row=on_row)
    assert [len(saved[m]) for m in methods] == [2, 1]
    computed = []
    resumed = report_build(
        tiny_unet,
        images,
        masks,
        methods=methods,
        done_rows={m: [{k: v for k, v in r.items()} for r in rows] for m, rows in saved.items()},
        on_row=lambda m, i, row: computed.append((m, i)),
    )
    assert computed == [("uncertainty", 1)]  # only the missing row is computed again
    for m in methods:
        for key in UNTIMED:
            assert resumed["methods"][m][key] == pytest.approx(whole["methods"][m][key], abs=1e-6), (m, key)


def test_attention_applies_only_to_a_network_with_attention_gates(tiny_unet):
    torch.manual_seed(0)
    gated = build_network(NetworkConfig(num_classes=3, channels=(4, 8, 16), arch="attention_unet"))
    assert skip_reason(gated, "attention") is None and skip_reason(gated, "gradcam") is None
    assert "attention gates" in skip_reason(tiny_unet, "attention")


def test_default_methods_follow_the_architecture():
    assert "attention" not in default_methods("unet") and "gradcam" in default_methods("unet")
    assert "attention" in default_methods("attention_unet")


def test_unknown_method_is_refused(phantom_cases, tiny_unet):
    images, masks = phantom_cases
    with pytest.raises(ValueError, match="unknown explanation methods"):
        report_build(tiny_unet, images, masks, methods=["psychic"])
