"""Tests for workers.ml.explain.explanations: contracts, known answers on a linear model, real-image localisation."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage
from torch import nn

from workers.ml.explain.explanations import (
    METHODS,
    explain,
    map_from_png,
    map_to_png,
    normalise_map,
    overlay_png,
)
from workers.ml.models.device import limit_cpu_threads
from workers.ml.models.networks import NetworkConfig, build_network

limit_cpu_threads(1)


def _tiny_unet(in_channels: int = 1, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_network(NetworkConfig(in_channels=in_channels, channels=(4, 8, 16), num_classes=2)).eval()


class Linear1x1(nn.Module):
    """logits[k] = w_k * x + b_k per pixel (1x1 conv): every attribution has a closed form."""

    def __init__(self, w: tuple[float, float], b: tuple[float, float]) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, kernel_size=1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor(w).view(2, 1, 1, 1))
            self.conv.bias.copy_(torch.tensor(b))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def _ramp_image(h: int = 32, w: int = 32) -> np.ndarray:
    """Left half dark, right half bright with a gradient: class 1 (w1 > w0) wins on the bright half."""
    img = np.zeros((1, h, w), dtype=np.float32)
    img[0, :, w // 2 :] = np.linspace(1.0, 2.0, w - w // 2, dtype=np.float32)
    return img


# --- contracts -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(("channels", "size"), [(1, (64, 64)), (3, (96, 96)), (1, (70, 90))])
def test_every_method_returns_unit_map_at_image_size(
    method: str, channels: int, size: tuple[int, int]
) -> None:
    model = _tiny_unet(channels)
    rng = np.random.default_rng(1)
    image = rng.random((channels, *size), dtype=np.float32)
    e = explain(model, image, method, target_class=1)
    assert e.method == method
    assert e.map.shape == size and e.map.dtype == np.float32
    assert np.isfinite(e.map).all()
    assert e.map.min() >= 0.0 and e.map.max() <= 1.0
    assert e.map.max() > 0.0  # a random image through a random net has spatial structure
    assert e.seconds > 0 and e.cost_forward_units > 0
    json.dumps(e.params)  # storable as JSON as-is
    assert e.params["target_class"] == 1 and e.params["image_shape"] == [channels, *size]


def test_model_state_grads_and_hooks_are_left_as_they_were() -> None:
    model = _tiny_unet()
    model.train()
    model.model[0].eval()  # a mixed state must survive too  # type: ignore[index]
    frozen = next(model.parameters())
    frozen.requires_grad_(False)
    model(torch.rand(1, 1, 32, 32)).sum().backward()  # pretend we are mid-training: .grad is populated
    grads = {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()}
    modes = {n: m.training for n, m in model.named_modules()}
    image = np.random.default_rng(0).random((1, 32, 32), dtype=np.float32)
    for method in METHODS:
        explain(model, image, method, target_class=1)
    assert {n: m.training for n, m in model.named_modules()} == modes
    assert not frozen.requires_grad
    assert all(p.requires_grad for n, p in model.named_parameters() if p is not frozen)
    for n, p in model.named_parameters():
        assert (p.grad is None) == (grads[n] is None)
        if p.grad is not None:
            assert torch.equal(p.grad, grads[n])
    assert not any(m._forward_hooks or m._backward_hooks for m in model.modules())


def test_invalid_arguments_are_rejected() -> None:
    model = _tiny_unet()
    image = np.zeros((1, 32, 32), dtype=np.float32)
    with pytest.raises(ValueError, match="unknown explanation method"):
        explain(model, image, "not_a_method", target_class=1)
    with pytest.raises(ValueError, match="target_class"):
        explain(model, image, "saliency", target_class=2)
    with pytest.raises(TypeError):
        explain(model, image, "smoothgrad", target_class=1, sample=4)  # typo of `samples`
    with pytest.raises(ValueError, match="region mask shape"):
        explain(model, image, "saliency", target_class=1, region=np.ones((8, 8), dtype=bool))
    with pytest.raises(ValueError, match="prepared"):
        explain(model, image[0], "saliency", target_class=1)


# --- normalisation and PNGs ----------------------------------------------------------------------------


def test_normalise_map_known_values_constant_and_nan() -> None:
    ramp = np.arange(200, dtype=np.float64).reshape(10, 20) - 50.0
    np.testing.assert_allclose(normalise_map(ramp, upper_percentile=100.0), (ramp + 50.0) / 199.0, atol=1e-7)
    clipped = normalise_map(ramp, upper_percentile=50.0)  # median 49.5 of [-50, 149] -> 1
    assert clipped[0, 0] == 0.0 and clipped.max() == 1.0
    assert np.isclose(clipped.ravel()[50], 50.0 / 99.5)
    for constant in (np.zeros((8, 8)), np.full((8, 8), 3.7), np.full((8, 8), -2.0)):
        out = normalise_map(constant)
        assert out.dtype == np.float32 and not out.any()
    with_nan = np.ones((4, 4))
    with_nan[0, 0], with_nan[1, 1], with_nan[2, 2] = np.nan, np.inf, 3.0
    out = normalise_map(with_nan, upper_percentile=100.0)
    assert np.isfinite(out).all() and out[2, 2] == 1.0 and out[0, 0] == 0.0 and out[1, 1] == 0.0


def test_overlay_png_decodes_at_image_size_and_leaves_unexplained_pixels_grey() -> None:
    image = np.tile(np.linspace(0, 1, 40, dtype=np.float32), (30, 1))[None]  # (1, 30, 40)
    heat = np.zeros((30, 40), dtype=np.float32)
    heat[10:20, 10:20] = 1.0
    for colormap in ("jet", "inferno"):
        with Image.open(io.BytesIO(overlay_png(image, heat, alpha=0.5, colormap=colormap))) as png:
            assert png.format == "PNG" and png.mode == "RGB" and png.size == (40, 30)
            rgb = np.asarray(png).astype(int)
        lo, hi = np.percentile(image, [1.0, 99.0])  # the documented 1-99 percentile grey window
        grey = np.rint(np.clip((image[0] - lo) / (hi - lo), 0, 1) * 255)
        outside = heat == 0
        for c in range(3):
            assert np.abs(rgb[..., c][outside] - grey[outside]).max() <= 1
        assert np.abs(rgb[15, 15] - rgb[15, 15].mean()).max() > 10  # coloured where the map is 1
    rgb_image = np.random.default_rng(0).random((3, 30, 40), dtype=np.float32)
    with Image.open(io.BytesIO(overlay_png(rgb_image, heat))) as png:
        assert png.size == (40, 30)
    with pytest.raises(ValueError):
        overlay_png(image, np.zeros((10, 10), dtype=np.float32))


def test_map_png_round_trip() -> None:
    heat = np.random.default_rng(0).random((33, 47)).astype(np.float32)
    data = map_to_png(heat)
    with Image.open(io.BytesIO(data)) as png:
        assert png.mode == "L" and png.size == (47, 33)
    back = map_from_png(data)
    assert back.shape == heat.shape and np.abs(back - heat).max() <= 1 / 510 + 1e-7


# --- known answers on a linear model -------------------------------------------------------------------


def test_saliency_on_linear_model_is_the_predicted_region() -> None:
    # F = mean over R of (2x - 1), R = {x > 0.5} (2x - 1 > x - 0.5: class 1 wins); dF/dx = 2/|R| on R.
    model = Linear1x1(w=(1.0, 2.0), b=(-0.5, -1.0))
    image = _ramp_image()
    region = image[0] > 0.5
    e = explain(model, image, "saliency", target_class=1)
    assert e.params["region"] == "predicted" and e.params["region_pixels"] == int(region.sum())
    np.testing.assert_array_equal(e.map, region.astype(np.float32))
    with torch.no_grad():  # a caller's no_grad (e.g. inference code) must not break gradient methods
        np.testing.assert_array_equal(explain(model, image, "saliency", target_class=1).map, e.map)
    # With a caller's mask the gradient lives exactly there.
    mask = np.zeros((32, 32), dtype=bool)
    mask[:5, :7] = True
    np.testing.assert_array_equal(explain(model, image, "saliency", target_class=1, region=mask).map, mask)
    # Over the whole image the gradient is constant: no spatial information, so all zeros (no NaN).
    whole = explain(model, image, "saliency", target_class=1, region="image")
    assert whole.params["region"] == "image" and not whole.map.any()


def test_empty_predicted_region_falls_back_to_whole_image() -> None:
    model = Linear1x1(w=(1.0, 2.0), b=(5.0, -5.0))  # class 1 never wins on [0, 2]
    e = explain(model, _ramp_image(), "saliency", target_class=1)
    assert e.params["region_fallback_to_image"] and e.params["region_pixels"] == 32 * 32


def test_integrated_gradients_on_linear_model_is_exact() -> None:
    # Linear F: IG = (x - b) * dF/dx exactly, with any grid. Zero baseline: attr = 2 x / |R| on R.
    model = Linear1x1(w=(1.0, 2.0), b=(-0.5, -1.0))
    image = _ramp_image()
    region = image[0] > 0.5
    e = explain(
        model, image, "integrated_gradients", target_class=1, baseline="zeros", steps=8, sign="positive"
    )
    expected_sum = 2.0 * float(image[0][region].mean())
    assert np.isclose(e.params["attribution_sum"], expected_sum, rtol=1e-5)
    assert e.params["completeness_error"] < 1e-5
    expected = np.where(region, image[0], 0.0)
    np.testing.assert_allclose(e.map, normalise_map(expected), atol=1e-6)


def test_uncertainty_is_absolute_normalised_entropy() -> None:
    undecided = Linear1x1(w=(0.0, 0.0), b=(0.3, 0.3))  # p = (0.5, 0.5): entropy = log 2 -> 1
    e = explain(undecided, _ramp_image(), "uncertainty", target_class=1)
    np.testing.assert_allclose(e.map, 1.0, atol=1e-6)  # constant but meaningful: kept, not zeroed
    sure = Linear1x1(w=(0.0, 0.0), b=(0.0, np.log(3.0)))  # p = (1/4, 3/4)
    p = np.array([0.25, 0.75])
    expected = -(p * np.log(p)).sum() / np.log(2.0)
    np.testing.assert_allclose(
        explain(sure, _ramp_image(), "uncertainty", target_class=0).map, expected, atol=1e-6
    )


# --- method parameters ---------------------------------------------------------------------------------


def test_occlusion_defaults_and_mask_capped_at_image_size() -> None:
    model = _tiny_unet()
    image = np.random.default_rng(0).random((1, 64, 64), dtype=np.float32)
    e = explain(model, image, "occlusion", target_class=1)
    assert (e.params["mask_size"], e.params["overlap"], e.params["mode"]) == (32, 0.5, "gaussian")
    small = explain(model, image[:, :24, :24], "occlusion", target_class=1, mode="mean_img")
    assert small.params["mask_size"] == 24 and small.map.shape == (24, 24)


def test_smoothgrad_is_reproducible_and_records_sigma() -> None:
    model = _tiny_unet()
    image = np.random.default_rng(0).random((1, 32, 32), dtype=np.float32) * 4.0
    a = explain(model, image, "smoothgrad", target_class=1, samples=6, batch_size=4, seed=3)
    b = explain(model, image, "smoothgrad", target_class=1, samples=6, batch_size=4, seed=3)
    np.testing.assert_array_equal(a.map, b.map)
    assert np.isclose(a.params["noise_sigma"], 0.15 * float(image.max() - image.min()), rtol=1e-5)


@pytest.mark.parametrize("baseline", ["blurred", "zeros"])
def test_integrated_gradients_completeness_on_trained_model(trained_wm_model, baseline: str) -> None:
    _, _, images, _ = trained_wm_model.data.split()
    e = explain(trained_wm_model.model, images[0], "integrated_gradients", target_class=1, baseline=baseline)
    assert e.params["steps"] == 64
    assert abs(e.params["score_input"] - e.params["score_baseline"]) > 1e-3
    assert e.params["completeness_error"] < 0.05


# --- localisation on real MNI152 slices ----------------------------------------------------------------


def energy_inside(heat: np.ndarray, mask: np.ndarray) -> float:
    return float(heat[mask].sum() / heat.sum())


@pytest.mark.parametrize("method", ["gradcam", "saliency"])
def test_maps_concentrate_on_white_matter_in_held_out_slices(trained_wm_model, method: str) -> None:
    assert trained_wm_model.held_out_dice > 0.8  # otherwise there is nothing sensible to explain
    _, _, images, masks = trained_wm_model.data.split()
    shares, areas = [], []
    for image, mask in zip(images, masks, strict=True):
        target = ndimage.binary_dilation(mask.astype(bool), iterations=3)
        heat = explain(trained_wm_model.model, image, method, target_class=1).map
        shares.append(energy_inside(heat, target))
        areas.append(float(target.mean()))
    print(f"{method}: energy inside dilated WM {np.round(shares, 3)}, area fraction {np.round(areas, 3)}")
    assert all(s > 0.5 for s in shares)  # most of the energy
    assert all(s > a for s, a in zip(shares, areas, strict=True))  # more than chance
    assert np.mean(shares) / np.mean(areas) > 1.5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("method", METHODS)
def test_cuda_matches_cpu(trained_wm_model, method: str) -> None:
    _, _, images, _ = trained_wm_model.data.split()
    cpu = explain(trained_wm_model.model, images[0], method, target_class=1)
    gpu_model = trained_wm_model.model.to("cuda")
    try:
        gpu = explain(gpu_model, images[0], method, target_class=1)
    finally:
        trained_wm_model.model.to("cpu")
    assert gpu.params["device"].startswith("cuda")
    assert np.isfinite(gpu.map).all() and gpu.map.shape == cpu.map.shape
    assert np.abs(gpu.map - cpu.map).mean() < 0.02


# --- Grad-CAM and saliency: the cheap implementations give the reference maps ------------------------------


def _raw_context(model: nn.Module, image: np.ndarray, target_class: int = 1):
    from workers.ml.explain.core import Context, RegionScore, graph_forward, region_weights, time_forward

    x = torch.from_numpy(image)[None]
    logits, seconds = time_forward(model, x)
    weights, _ = region_weights(logits, target_class, None, "mean", *image.shape[1:])
    leaf, graph_logits = graph_forward(model, x)
    score = RegionScore(model, target_class, weights)
    plain = Context(model, x, *image.shape[1:], target_class, logits, score, seconds)
    fused = Context(model, x, *image.shape[1:], target_class, logits, score, seconds, leaf, graph_logits)
    return plain, fused


@pytest.mark.parametrize("arch", ["unet", "attention_unet"])
def test_gradcam_equals_monai_gradcam(arch: str) -> None:
    from monai.visualize import GradCAM

    from workers.ml.explain import methods as explain_methods
    from workers.ml.explain.core import frozen_model
    from workers.ml.models.networks import cam_layer_name

    torch.manual_seed(3)
    model = build_network(NetworkConfig(channels=(4, 8, 16), num_classes=3, arch=arch)).eval()
    image = np.random.default_rng(2).random((1, 48, 64), dtype=np.float32)
    with frozen_model(model):
        ctx, _ = _raw_context(model, image, target_class=2)
        ours, used = explain_methods.gradcam(ctx, antialias=False)  # MONAI's plain bilinear upsampling
        assert not any(m._forward_hooks for m in model.modules())  # our hook is gone (MONAI's stay)
        x = ctx.x.detach().requires_grad_(True)
        cam = GradCAM(
            nn_module=ctx.score, target_layers=f"net.{cam_layer_name(model)}", postprocessing=lambda a: a
        )
        reference = cam(x, class_idx=0)[0, 0].detach().numpy()
    assert used == {"layer": cam_layer_name(model), "antialias": False}
    assert ours.shape == reference.shape and np.abs(reference).max() > 0
    np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-6 * np.abs(reference).max())


def test_saliency_from_the_clean_forward_equals_a_second_pass() -> None:
    from workers.ml.explain import methods as explain_methods
    from workers.ml.explain.core import frozen_model

    model = _tiny_unet(seed=4)
    image = np.random.default_rng(5).random((1, 40, 40), dtype=np.float32)
    with frozen_model(model):
        plain, fused = _raw_context(model, image)
        two_pass, _ = explain_methods.saliency(plain)
        one_pass, _ = explain_methods.saliency(fused)
    assert two_pass.max() > 0
    np.testing.assert_allclose(one_pass, two_pass, rtol=1e-5, atol=1e-7)


def test_predicted_region_is_argmax_ties_included() -> None:
    from workers.ml.explain.core import predicted_region

    rng = np.random.default_rng(0)
    logits = torch.from_numpy(rng.integers(0, 3, size=(4, 30, 20)).astype(np.float32))  # many ties
    for t in range(4):
        expected = logits.argmax(dim=0) == t
        assert torch.equal(predicted_region(logits, t), expected), t
