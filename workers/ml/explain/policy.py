"""Which explanation methods exist, which architecture each needs, and what each costs: no torch import,
so the web process can list and classify methods cheaply."""

from __future__ import annotations

METHODS: tuple[str, ...] = (
    "gradcam",
    "saliency",
    "smoothgrad",
    "integrated_gradients",
    "occlusion",
    "uncertainty",
    "lime",
    "kernel_shap",
    "gradient_shap",
    "gradcam_shap",
    "gradcam_occlusion",
)
# Methods that read only the model's outputs (no gradients, no layer): all a backend that declares no gradient
# explanations (workers.ml.backends.Capabilities) can offer.
GRADIENT_FREE_METHODS: tuple[str, ...] = ("occlusion", "uncertainty", "lime", "kernel_shap")
# Methods that need a particular architecture (see workers.ml.explain.explanations).
MODEL_SPECIFIC_METHODS: tuple[str, ...] = ("attention",)
ALL_METHODS: tuple[str, ...] = (*METHODS, *MODEL_SPECIFIC_METHODS)
# What the pipeline precomputes for every new version when the project's training_config names no
# `explain_methods` (the one definition: training defaults, scoring follow-ups and the settings page use it).
DEFAULT_METHODS: tuple[str, ...] = ("gradcam", "saliency")

# Cost policy. Nominal cost with default parameters in forward-pass units (a backward pass counted as two
# forwards): what a scheduler can know before running a method. Interactive methods (<= 3 units: one forward
# and at most one backward) may run on demand while a reader waits; the rest run in the background queue
# and are cached. The measured cost of every stored map is recorded beside it (`cost_forward_units`).
INTERACTIVE_MAX_COST = 3.0
NOMINAL_COST: dict[str, float] = {
    "uncertainty": 1.0,
    "attention": 1.0,
    "gradcam": 3.0,
    "saliency": 3.0,
    "occlusion": 256.0,  # 32 px patches, overlap 0.5, on 256x256: 16 x 16 occluded forwards (batched)
    "smoothgrad": 16 * 3.0,
    "gradient_shap": 64 * 3.0,
    "integrated_gradients": 65 * 3.0,
    "lime": 201.0,
    "kernel_shap": 258.0,
    "gradcam_shap": 261.0,
    "gradcam_occlusion": 259.0,
}
ARCH_METHODS: dict[str, tuple[str, ...]] = {"unet": (), "attention_unet": ("attention",)}


def is_interactive(method: str) -> bool:
    """True when `method` is cheap enough (nominal cost <= INTERACTIVE_MAX_COST) to run on demand."""
    return NOMINAL_COST.get(method, float("inf")) <= INTERACTIVE_MAX_COST


def methods_for_arch(arch: str) -> tuple[str, ...]:
    """Every method that can explain a model of this architecture (`NetworkConfig.arch`)."""
    return METHODS + ARCH_METHODS.get(arch, ())


ARCH_LABELS: dict[str, str] = {
    "unet": "U-Net (MONAI UNet)",
    "attention_unet": "Attention U-Net (MONAI AttentionUnet: adds attention-gate maps)",
}


def method_catalogue() -> list[dict[str, object]]:
    """Every method, cheapest first, with its nominal cost, whether it runs on demand, and the
    architectures it can explain (for settings pages)."""
    methods = sorted(NOMINAL_COST, key=lambda m: (NOMINAL_COST[m], m))
    return [
        {
            "method": m,
            "nominal_cost": NOMINAL_COST[m],
            "interactive": is_interactive(m),
            "archs": [a for a in ARCH_LABELS if m in methods_for_arch(a)],
        }
        for m in methods
    ]


# The explanation quality report's catalogue (workers.ml.explain.report): method -> the review's family.
FAMILIES = {  # method -> the review's family
    "gradcam": "Grad-CAM",
    "saliency": "saliency",
    "smoothgrad": "saliency (SmoothGrad)",
    "lime": "LIME",
    "occlusion": "occlusion",
    "kernel_shap": "SHAP (kernel)",
    "gradient_shap": "SHAP (gradient)",
    "integrated_gradients": "integrated gradients",
    "attention": "attention (AttentionUnet)",
    "gradcam_shap": "hybrid Grad-CAM x SHAP",
    "gradcam_occlusion": "hybrid Grad-CAM x occlusion",
}


def applies_to_arch(method: str, arch: str) -> bool:
    """Whether `method` can explain a network of `arch` (`NetworkConfig.arch`)."""
    return method in methods_for_arch(arch)


def default_methods(arch: str) -> list[str]:
    """Every catalogue method (FAMILIES) that a network of `arch` can be explained with."""
    return [m for m in FAMILIES if applies_to_arch(m, arch)]
