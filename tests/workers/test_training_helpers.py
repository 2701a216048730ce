"""Shared builders for the training/scoring tests (no tests here): tiny phantom projects stored through the
real storage helpers, and a tiny training config that runs in a second or two on a CPU."""

import hashlib
import uuid

import numpy as np

from annotations.models import Annotation, AnnotationKind, Case, CaseSplit, Image, ImageStatus
from hitl.core.storage import array_to_bytes, bytes_save, mask_to_png
from workers.ml.research.phantoms import PhantomSpec, make_phantoms

SPEC = PhantomSpec(size=(32, 32), modality="MR", num_classes=3, max_objects=2)

TINY = {
    "channels": [4, 8, 16],
    "epochs": 2,
    "patch_size": 32,
    "batch_size": 4,
    "max_steps_per_epoch": 2,
    "early_stopping_patience": 0,
    "mc_samples": 2,
    "seed": 0,
}


def add_case(project, *, user, image: np.ndarray, mask: np.ndarray | None, split: str) -> Case:
    """One single-slice image with its case, and (if `mask`) an imported reference annotation."""
    pixels = image[None].astype(np.float32)
    data = array_to_bytes(pixels)
    digest = hashlib.sha256(data + uuid.uuid4().bytes).hexdigest()
    img = Image.objects.create(
        project=project,
        display_name=f"phantom {digest[:8]}",
        source_kind="png",
        modality="MR",
        pixels_path=bytes_save(f"projects/{project.pk}/images/{digest[:16]}/pixels.npy", data),
        shape=list(pixels.shape),
        dtype=str(pixels.dtype),
        spacing=[1.0, 1.0, 1.0],
        content_hash=digest,
        status=ImageStatus.READY,
        created_by=user,
    )
    case = Case.objects.create(project=project, image=img, slice_index=0, split=split)
    if mask is not None:
        annotate(case, mask=mask, user=user, kind=AnnotationKind.REFERENCE)
    return case


def annotate(case: Case, *, mask: np.ndarray, user, kind: str = AnnotationKind.READER) -> Annotation:
    png = mask_to_png(mask)
    revision = case.annotations.count() + 1
    ann = Annotation.objects.create(
        case=case,
        revision=revision,
        kind=kind,
        author=user,
        mask_path=bytes_save(f"projects/{case.project_id}/masks/case-{case.pk}-r{revision}.png", png),
        mask_sha256=hashlib.sha256(png).hexdigest(),
    )
    case.current_annotation = ann
    case.save(update_fields=["current_annotation"])
    return ann


def seed_project(project, user, *, n_train=4, n_val=2, n_test=2, n_pool=6, seed=0) -> dict[str, list[Case]]:
    """Labelled train/validation/test cases and an unlabelled pool, from phantoms."""
    total = n_train + n_val + n_test + n_pool
    batch = make_phantoms(total, seed=seed, spec=SPEC)
    out: dict[str, list[Case]] = {"train": [], "validation": [], "test": [], "pool": []}
    plan = (
        [("train", CaseSplit.TRAIN, True)] * n_train
        + [("validation", CaseSplit.VALIDATION, True)] * n_val
        + [("test", CaseSplit.TEST, True)] * n_test
        + [("pool", CaseSplit.POOL, False)] * n_pool
    )
    for i, (key, split, labelled) in enumerate(plan):
        mask = batch.masks[i] if labelled else None
        out[key].append(add_case(project, user=user, image=batch.images[i], mask=mask, split=split))
    return out


def pool_masks(n_pool: int, *, seed=0, offset: int) -> np.ndarray:
    """The phantom masks of the pool cases seeded by `seed_project` (for simulated reader submissions)."""
    return make_phantoms(offset + n_pool, seed=seed, spec=SPEC).masks[offset:]


def make_version(
    project,
    *,
    number: int,
    state: str = "candidate",
    val_dice: float = 0.5,
    seed: int = 0,
    arch: str = "unet",
    **kw,
):
    """A registered version with an untrained tiny network's weights (no training needed)."""
    import torch
    from django.utils import timezone

    from workers.ml.models.checkpoint import checkpoint_to_bytes
    from workers.ml.models.networks import NetworkConfig, build_network
    from workers.models import ModelVersion

    torch.manual_seed(seed)
    net = NetworkConfig(num_classes=3, channels=(4, 8, 16), arch=arch)
    data = checkpoint_to_bytes(build_network(net), net)
    path = bytes_save(f"projects/{project.pk}/models/test-v{number}.ckpt", data)
    return ModelVersion.objects.create(
        project=project,
        number=number,
        state=state,
        weights_path=path,
        weights_sha256=hashlib.sha256(data).hexdigest(),
        config={
            "network": net.to_dict(),
            "scoring": {"mc_samples": 2, "aggregation": "mean"},
            "explain_methods": ["gradcam", "saliency"],
        },
        metrics={"validation_dice": val_dice, "test_dice": val_dice - 0.05, "labelled_cases": 4 * number},
        promoted_at=kw.pop("promoted_at", timezone.now() if state != "candidate" else None),
        **kw,
    )
