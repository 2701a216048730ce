"""The model backend interface (issue 18, item 1): what the active-learning loop needs from a model, and the
service's three backends. Services, tasks, scoring, proposals and explanations reach a model only through
`backend_for(config)`; nothing outside this module branches on which backend a version has.

A backend
- fits a model on labelled cases (`fit(job, progress, should_stop)`: progress once per epoch, polling
  should_stop for cancellation) and says how its versions are stored (`Fitted.checkpoint`: the extra
  arguments of `checkpoint.checkpoint_to_bytes`); every backend's model is a torch module that maps a
  prepared (B, C, H, W) batch to logits (B, K, H, W), so metrics, gating and storage are shared;
- gives per-class probabilities for proposals and metrics (`predict_proba`);
- gives the predictive samples that pool scoring, uncertainty maps and calibration read (`score`,
  `predictive_proba`): MC dropout for a network with dropout, otherwise mirror test-time augmentation
  (nnU-Net's: its networks have no dropout, so MC samples would all be equal and every BALD score 0);
- declares its capabilities: whether the loop trains it, whether a run may warm-start from the active
  version, whether gradient explanations apply (`explain_layer`: the layer Grad-CAM reads), and whether a
  version exports as a MONAI bundle.

Backends: "builtin" (the service's MONAI U-Net and its few-labels recipe), "monai_bundle" (an imported MONAI
bundle's network: measured and gated at import, then fine-tuned by the service's trainer), "nnunet" (nnU-Net
v2's own plan, preprocessing and trainer in a child interpreter; workers.ml.models.nnunet)."""

from __future__ import annotations

import copy
import dataclasses
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from torch import nn

from workers.ml.al.scoring import PoolScores, mc_predict_proba, score_pool
from workers.ml.models.checkpoint_format import BUNDLE_BACKEND, NNUNET_BACKEND
from workers.ml.models.inference import predict_proba
from workers.ml.models.networks import NetworkConfig, cam_layer_name
from workers.ml.models.training import EpochReport, TrainConfig, train

BUILTIN_BACKEND = "builtin"
Progress = Callable[[EpochReport], None]
ShouldStop = Callable[[], bool]


@dataclass(frozen=True)
class Capabilities:
    trains: bool  # the loop fits new versions with it
    warm_starts: bool  # a run may start from the active version's weights (same backend and network)
    gradient_explanations: bool  # Grad-CAM, saliency and the other gradient methods apply
    bundle_export: bool  # a version downloads as a MONAI bundle


@dataclass(frozen=True)
class FitJob:
    net_cfg: NetworkConfig  # the project's channels and classes (and, built-in, the network)
    train_cfg: TrainConfig
    images: Sequence[np.ndarray]  # prepared (C, H, W) float32
    masks: Sequence[np.ndarray]  # (H, W) labels 0..K-1
    val_images: Sequence[np.ndarray] = ()
    val_masks: Sequence[np.ndarray] = ()
    names: Sequence[str] = ()  # one per image (letters, digits, '_'): case names where a backend writes files
    init: nn.Module | None = None  # the version a run starts from (its weights; a bundle's network too)
    options: dict[str, Any] = field(default_factory=dict)  # the backend's own settings (see each backend)
    modality: str = "MR"
    scratch: Path | None = None  # where a backend may write temporary files
    threads: int = 1


@dataclass(frozen=True)
class Fitted:
    model: nn.Module | None  # eval mode; None when cancelled or failed
    net_cfg: NetworkConfig  # as stored with the version
    extra: dict[str, Any] = field(default_factory=dict)  # recorded with the version's metrics
    checkpoint: dict[str, Any] = field(default_factory=dict)  # checkpoint_to_bytes(..., **checkpoint)
    cancelled: bool = False
    error: str = ""


def has_dropout(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0 for m in model.modules())


class ModelBackend:
    name: ClassVar[str]
    capabilities: ClassVar[Capabilities]

    def fit(self, job: FitJob, progress: Progress, should_stop: ShouldStop) -> Fitted:
        raise NotImplementedError

    def predict_proba(
        self, model: nn.Module, images: Sequence[np.ndarray], *, batch_size: int = 8
    ) -> list[np.ndarray]:
        """Softmax (K, H, W) per image: what proposals and metrics read."""
        return predict_proba(model, images, batch_size=batch_size)

    def sampling(self, model: nn.Module) -> str:
        """How predictive samples are drawn: "dropout" (MC dropout) or "mirror" (mirror TTA)."""
        return "dropout" if has_dropout(model) else "mirror"

    def score(
        self, model: nn.Module, images: Sequence[np.ndarray], *, samples: int, **kwargs: Any
    ) -> PoolScores:
        """Pool scores and uncertainty maps (workers.ml.al.scoring) from this backend's samples."""
        return score_pool(model, images, mc_samples=samples, sampling=self.sampling(model), **kwargs)

    def predictive_proba(
        self, model: nn.Module, images: Sequence[np.ndarray], *, samples: int, batch_size: int = 8
    ) -> list[np.ndarray]:
        """The mean of the samples `score` reads (K, H, W) per image: what calibration is measured on."""
        return mc_predict_proba(
            model, images, mc_samples=samples, batch_size=batch_size, sampling=self.sampling(model)
        )

    def explain_layer(self, model: nn.Module) -> str | None:
        """The layer (Seg-)Grad-CAM reads; None when this backend declares no gradient explanations."""
        return cam_layer_name(model) if self.capabilities.gradient_explanations else None


def _trained(job: FitJob, progress: Progress, should_stop: ShouldStop, model: nn.Module | None) -> Fitted:
    """The service's trainer (workers.ml.models.training) on the job: from `job.init`'s weights when given,
    around `model` (a bundle's network) when given."""
    result = train(
        job.net_cfg,
        job.train_cfg,
        job.images,
        job.masks,
        job.val_images,
        job.val_masks,
        init_state=job.init.state_dict() if job.init is not None and model is None else None,
        model=model,
        progress=progress,
        should_stop=should_stop,
    )
    extra = {"best_epoch": result.best_epoch, "epochs_run": len(result.history), "seed": job.train_cfg.seed}
    if result.cancelled:
        return Fitted(None, job.net_cfg, extra, cancelled=True)
    return Fitted(result.model, job.net_cfg, extra)


class BuiltinBackend(ModelBackend):
    name = BUILTIN_BACKEND
    capabilities = Capabilities(trains=True, warm_starts=True, gradient_explanations=True, bundle_export=True)

    def fit(self, job: FitJob, progress: Progress, should_stop: ShouldStop) -> Fitted:
        return _trained(job, progress, should_stop, None)


class BundleBackend(ModelBackend):
    """An imported MONAI bundle's network. Fitting fine-tunes `job.init` (a bundle version: its network and
    weights) with the service's trainer; options: {"network_def": the checked definition}."""

    name = BUNDLE_BACKEND
    capabilities = Capabilities(trains=True, warm_starts=True, gradient_explanations=True, bundle_export=True)

    def fit(self, job: FitJob, progress: Progress, should_stop: ShouldStop) -> Fitted:
        if job.init is None:
            return Fitted(None, job.net_cfg, error="no imported MONAI bundle to fine-tune")
        fitted = _trained(job, progress, should_stop, copy.deepcopy(job.init))
        stored = {"network_def": job.options["network_def"]}
        return dataclasses.replace(
            fitted, extra={**fitted.extra, "fine_tuned_bundle": True}, checkpoint=stored
        )


class NnunetBackend(ModelBackend):
    """nnU-Net v2: the job's cases as an nnU-Net raw dataset in `job.scratch`, its fingerprint, plan,
    preprocessing and trainer in a child interpreter, progress per epoch; the network back as a torch
    module (workers.ml.models.nnunet_network). Options: {"epochs", "iterations"} (its schedule). Its
    networks have no dropout: uncertainty is mirror TTA, nnU-Net's own test-time augmentation."""

    name = NNUNET_BACKEND
    capabilities = Capabilities(
        trains=True, warm_starts=False, gradient_explanations=True, bundle_export=False
    )
    DATASET_ID = 1  # each run has a folder of its own: one dataset in it

    def fit(self, job: FitJob, progress: Progress, should_stop: ShouldStop) -> Fitted:
        from workers.ml.models import nnunet

        if not job.images:
            return Fitted(None, job.net_cfg, error="nnU-Net needs at least one labelled case")
        schedule = nnunet.NnunetSchedule(
            epochs=int(job.options["epochs"]), iterations=int(job.options["iterations"])
        )
        started = time.monotonic()

        def on_epoch(epoch: int, epochs: int, loss: float) -> None:
            per_epoch = (time.monotonic() - started) / max(1, epoch)
            progress(EpochReport(epoch, epochs, loss, float("nan"), per_epoch, per_epoch * (epochs - epoch)))

        stored_cfg = dataclasses.replace(job.net_cfg, arch=NNUNET_BACKEND, channels=(), dropout=0.0)
        with tempfile.TemporaryDirectory(prefix="nnunet-", dir=job.scratch) as tmp:
            root = Path(tmp)
            nnunet.raw_dataset_write(root, self.DATASET_ID, "run", _nnunet_cases(job), *_nnunet_names(job))
            result = nnunet.fit_in_subprocess(
                root,
                self.DATASET_ID,
                schedule,
                threads=job.threads,
                progress=on_epoch,
                should_stop=should_stop,
            )
            extra = {"backend": NNUNET_BACKEND, "nnunet_plan": result.plan}
            if result.model_dir is None:
                return Fitted(None, stored_cfg, extra, cancelled=result.cancelled, error=result.error)
            model, plans, dataset_json = nnunet.trained_load(result.model_dir)
        return Fitted(
            model, stored_cfg, extra, checkpoint={"nnunet": {"plans": plans, "dataset": dataset_json}}
        )


def channel_names(modality: str, in_channels: int) -> list[str]:
    """nnU-Net chooses its normalisation by channel name: "CT" gets its CT scheme (clip to the foreground
    percentiles, global z-score); any other name a per-image z-score."""
    return [modality if modality == "CT" else f"channel_{i}" for i in range(in_channels)]


def _nnunet_cases(job: FitJob) -> list:
    from workers.ml.models.nnunet import NnunetCase

    names = list(job.names) or [f"case_{i}" for i in range(len(job.images))]
    return [NnunetCase(n, im, m) for n, im, m in zip(names, job.images, job.masks, strict=True)]


def _nnunet_names(job: FitJob) -> tuple[list[str], list[str]]:
    channels = channel_names(job.modality, int(job.images[0].shape[0]))
    labels = ["background", *(f"class_{k}" for k in range(1, job.net_cfg.num_classes))]
    return channels, labels


BACKENDS: dict[str, ModelBackend] = {b.name: b for b in (BuiltinBackend(), BundleBackend(), NnunetBackend())}


def backend_for(config: dict[str, Any]) -> ModelBackend:
    """The backend of a run's or version's config ({"backend": name}; none named: the built-in one)."""
    name = config.get("backend") or BUILTIN_BACKEND
    if name not in BACKENDS:
        raise ValueError(f"unknown model backend {name!r}")
    return BACKENDS[name]
