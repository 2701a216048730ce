"""A training run on the nnU-Net v2 backend (a project's training config {"backend": "nnunet"}): the run's
labelled train cases written as an nnU-Net raw dataset in a temporary folder, nnU-Net's own fingerprint,
plan, preprocessing and trainer in a child interpreter (workers.ml.models.nnunet), its progress reported per
epoch like the built-in trainer's, then the trained network back as a torch module the service measures,
gates, registers and serves like any version (workers.ml.models.nnunet_network)."""

from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings

from workers.ml.models import nnunet
from workers.ml.models.training import EpochReport
from workers.services.datasets import LabelledSet

log = logging.getLogger(__name__)

DATASET_ID = 1  # each run has a folder of its own: one dataset in it


@dataclass(frozen=True)
class NnunetFit:
    model: Any | None  # NnunetNetwork in eval mode; None when cancelled or failed
    meta: dict[str, Any]  # {"plans", "dataset"}: stored in the checkpoint
    plan: dict[str, Any]  # what nnU-Net decided (patch size, batch size, normalisation, spacing)
    cancelled: bool = False
    error: str = ""


def channel_names(modality: str, in_channels: int) -> list[str]:
    """nnU-Net chooses its normalisation by channel name: "CT" gets its CT scheme (clip to the foreground
    percentiles, global z-score); any other name a per-image z-score."""
    return [modality if modality == "CT" else f"channel_{i}" for i in range(in_channels)]


def nnunet_fit(
    *, train_set: LabelledSet, modality: str, num_classes: int, config: dict[str, Any], monitor
) -> NnunetFit:
    """Fit nnU-Net on `train_set` (prepared (C, H, W) images and masks); `monitor` has the built-in trainer's
    progress(EpochReport) and should_stop()."""
    schedule = nnunet.NnunetSchedule(epochs=int(config["epochs"]), iterations=int(config["iterations"]))
    in_channels = int(train_set.images[0].shape[0])
    cases = [
        nnunet.NnunetCase(f"case_{cid}", image, mask)
        for cid, image, mask in zip(train_set.case_ids, train_set.images, train_set.masks, strict=True)
    ]
    labels = ["background", *(f"class_{k}" for k in range(1, num_classes))]
    started = time.monotonic()

    def progress(epoch: int, epochs: int, loss: float) -> None:
        per_epoch = (time.monotonic() - started) / max(1, epoch)
        monitor.progress(
            EpochReport(epoch, epochs, loss, float("nan"), per_epoch, per_epoch * (epochs - epoch))
        )

    with tempfile.TemporaryDirectory(prefix="nnunet-", dir=_scratch()) as tmp:
        root = Path(tmp)
        nnunet.raw_dataset_write(root, DATASET_ID, "run", cases, channel_names(modality, in_channels), labels)
        result = nnunet.fit_in_subprocess(
            root,
            DATASET_ID,
            schedule,
            threads=int(os.environ.get("HITL_TORCH_THREADS", "1")),
            progress=progress,
            should_stop=monitor.should_stop,
            log=log.debug,
        )
        if result.model_dir is None:
            return NnunetFit(None, {}, result.plan, cancelled=result.cancelled, error=result.error)
        model, plans, dataset_json = nnunet.trained_load(result.model_dir)
    return NnunetFit(model, {"plans": plans, "dataset": dataset_json}, result.plan)


def _scratch() -> Path:
    """Temporary files of a run beside the media (the same disk the service was given), not in /tmp."""
    path = Path(settings.VAR_DIR) / "tmp"
    path.mkdir(parents=True, exist_ok=True)
    return path
