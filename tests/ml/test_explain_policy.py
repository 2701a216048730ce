"""The explanation cost policy: every method has a nominal cost that follows its default parameters, and
exactly the one-forward(-and-backward) methods are interactive."""

import inspect

import pytest

from workers.ml.explain import lime as explain_lime
from workers.ml.explain import methods as explain_methods
from workers.ml.explain import shap as explain_shap
from workers.ml.explain.policy import (
    INTERACTIVE_MAX_COST,
    METHODS,
    MODEL_SPECIFIC_METHODS,
    NOMINAL_COST,
    is_interactive,
    methods_for_arch,
)
from workers.ml.models.networks import ARCHITECTURES


def _default(fn, name: str) -> int:
    return inspect.signature(fn).parameters[name].default


def test_every_method_has_a_nominal_cost():
    assert set(NOMINAL_COST) == set(METHODS) | set(MODEL_SPECIFIC_METHODS)


def test_interactive_methods_are_the_single_pass_ones():
    interactive = {m for m in NOMINAL_COST if is_interactive(m)}
    assert interactive == {"uncertainty", "attention", "gradcam", "saliency"}
    assert all(NOMINAL_COST[m] <= INTERACTIVE_MAX_COST for m in interactive)
    assert not is_interactive("no_such_method")


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        ("smoothgrad", 3.0 * _default(explain_methods.smoothgrad, "samples")),
        ("integrated_gradients", 3.0 * (_default(explain_methods.integrated_gradients, "steps") + 1)),
        ("lime", _default(explain_lime.lime, "samples") + 1.0),
        ("kernel_shap", _default(explain_shap.kernel_shap, "samples") + 2.0),
        ("gradient_shap", 3.0 * _default(explain_shap.gradient_shap, "samples")),
    ],
)
def test_nominal_cost_follows_the_default_parameters(method, expected):
    assert NOMINAL_COST[method] == pytest.approx(expected)


def test_occlusion_cost_counts_the_default_windows_on_256():
    mask, overlap = (
        _default(explain_methods.occlusion, "mask_size"),
        _default(explain_methods.occlusion, "overlap"),
    )
    stride = int(mask * (1 - overlap))
    assert NOMINAL_COST["occlusion"] == (256 // stride) ** 2


def test_methods_for_arch():
    assert "attention" not in methods_for_arch("unet")
    assert set(methods_for_arch("attention_unet")) == set(METHODS) | {"attention"}
    assert all(set(METHODS) <= set(methods_for_arch(a)) for a in ARCHITECTURES)


def test_method_catalogue_lists_each_method_once_cheapest_first_with_its_networks():
    from workers.ml.explain.policy import method_catalogue

    catalogue = method_catalogue()
    assert [m["method"] for m in catalogue][:2] == ["attention", "uncertainty"]
    costs = [m["nominal_cost"] for m in catalogue]
    assert costs == sorted(costs) and len(catalogue) == len(NOMINAL_COST)
    by_name = {m["method"]: m for m in catalogue}
    assert by_name["attention"]["archs"] == ["attention_unet"]
    assert (
        by_name["gradcam"]["archs"] == ["unet", "attention_unet"] and by_name["lime"]["interactive"] is False
    )
