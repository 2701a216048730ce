"""nnU-Net v2 (the field's baseline, `nnunetv2` on the package index) on a project's 2D cases: write them as an
nnU-Net raw dataset, extract the fingerprint, plan and preprocess the `2d` configuration, train (fold "all"),
and load the result as the service's torch module (workers.ml.models.nnunet_network) or as nnU-Net's own
sliding-window predictor. Pure: numpy arrays in, arrays and a model folder out; no Django.

nnU-Net reads its three folders from environment variables; `nnunet_folders` sets them for the duration of
a call and puts them back after. `fit_in_subprocess` runs plan, preprocessing and training in a child
interpreter (below: why), with data augmentation in the trainer's own thread (nnUNet_n_proc_DA=0: a
worker's cores are its torch threads) and, on a CPU, a short schedule: `epochs` x `iterations` steps
instead of nnU-Net's 1000 x 250, so that a run on a 2-core machine ends in minutes, not days. With a GPU the
same code runs nnU-Net's own schedule (epochs=1000, iterations=250).

Images are (C, H, W) float arrays (C = the project's channels) with a pixel spacing (row, column) in mm;
labels are (H, W) integer arrays with values 0..K-1 (the project's label names, background first)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from workers.ml.process import die_with_parent

CONFIGURATION = "2d"
FOLD = "all"  # train on every labelled case: the project's own validation cases gate the version
PLANS = "nnUNetPlans"
WEIGHTS = "weights.pt"  # the network's state dict and mirroring axes only: loads with weights_only=True
_ENV = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_n_proc_DA", "nnUNet_compile")


@dataclass(frozen=True)
class NnunetCase:
    name: str  # letters, digits, '_' only (a file name in nnU-Net's layout)
    image: np.ndarray  # (C, H, W)
    label: np.ndarray  # (H, W) ints 0..K-1
    spacing: tuple[float, float] = (1.0, 1.0)  # (row, column) mm


@dataclass(frozen=True)
class NnunetSchedule:
    epochs: int = 2
    iterations: int = 20  # training steps per epoch
    val_iterations: int = 2


def dataset_name(dataset_id: int, name: str) -> str:
    return f"Dataset{dataset_id:03d}_{name}"


@contextlib.contextmanager
def nnunet_folders(root: Path) -> Iterator[Path]:
    """nnU-Net's raw/preprocessed/results folders under root, set in the environment while inside."""
    saved = {k: os.environ.get(k) for k in _ENV}
    for sub, key in (
        ("raw", "nnUNet_raw"),
        ("preprocessed", "nnUNet_preprocessed"),
        ("results", "nnUNet_results"),
    ):
        (root / sub).mkdir(parents=True, exist_ok=True)
        os.environ[key] = str(root / sub)
    os.environ["nnUNet_n_proc_DA"] = "1"  # the planner sizes its torch threads by it (0 is refused there)
    os.environ["nnUNet_compile"] = "f"  # torch.compile costs minutes on a CPU and gains nothing here
    try:
        yield root
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def raw_dataset_write(
    root: Path,
    dataset_id: int,
    name: str,
    cases: Sequence[NnunetCase],
    channels: Sequence[str],
    labels: Sequence[str],
) -> Path:
    """The cases as nnU-Net's raw layout (imagesTr/<case>_<channel>.nii.gz, labelsTr/<case>.nii.gz,
    dataset.json) under root/raw; returns the dataset folder."""
    import SimpleITK as sitk

    if not cases:
        raise ValueError("nnU-Net needs at least one labelled case")
    folder = root / "raw" / dataset_name(dataset_id, name)
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    for case in cases:
        if (
            case.image.ndim != 3
            or case.image.shape[0] != len(channels)
            or case.image.shape[1:] != case.label.shape
        ):
            raise ValueError(
                f"case {case.name}: image {case.image.shape} and label {case.label.shape} do not match"
            )
        for c in range(len(channels)):
            _nifti_write(
                sitk,
                case.image[c].astype(np.float32),
                case.spacing,
                folder / "imagesTr" / f"{case.name}_{c:04d}.nii.gz",
            )
        _nifti_write(
            sitk, case.label.astype(np.uint8), case.spacing, folder / "labelsTr" / f"{case.name}.nii.gz"
        )
    meta = {
        "channel_names": {str(i): ch for i, ch in enumerate(channels)},
        "labels": {label: i for i, label in enumerate(labels)},
        "numTraining": len(cases),
        "file_ending": ".nii.gz",
    }
    (folder / "dataset.json").write_text(json.dumps(meta, indent=2))
    return folder


def _nifti_write(sitk, array: np.ndarray, spacing: tuple[float, float], path: Path) -> None:
    image = sitk.GetImageFromArray(array)  # (H, W) -> a 2D image, x = columns
    image.SetSpacing((float(spacing[1]), float(spacing[0])))
    sitk.WriteImage(image, str(path))


def plan_and_preprocess(dataset_id: int, *, processes: int = 1) -> dict:
    """nnU-Net's fingerprint, experiment plan and `2d` preprocessing; returns the 2d configuration's plan
    (patch size, batch size, normalisation, network) as nnU-Net decided it from the data."""
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprint_dataset,
        plan_experiment_dataset,
        preprocess_dataset,
    )

    extract_fingerprint_dataset(dataset_id, num_processes=processes, verbose=False, show_progress_bar=False)
    plans, identifier = plan_experiment_dataset(dataset_id)
    preprocess_dataset(
        dataset_id, identifier, (CONFIGURATION,), (processes,), verbose=False, show_progress_bar=False
    )
    return plans["configurations"][CONFIGURATION]


def train(
    dataset_id: int,
    *,
    schedule: NnunetSchedule,
    device: str = "cpu",
    progress: Callable[[int, int, float], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> Path:
    """Train the `2d` configuration on every case (fold 'all'); returns the model folder nnU-Net's predictor
    loads (plans.json, dataset.json, fold_all/checkpoint_final.pth). progress(epoch, epochs, train_loss) after
    each epoch; `cancelled()` true stops after the current epoch with the last weights saved."""
    import torch
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.utilities.dataset_name_id_conversion import convert_id_to_dataset_name

    trainer_cls = _short_trainer(schedule)
    name = convert_id_to_dataset_name(dataset_id)
    prep = Path(os.fspath(nnUNet_preprocessed)) / name
    plans = load_json(str(prep / f"{PLANS}.json"))
    plans["continue_training"] = False  # what nnU-Net's run_training adds for its trainer
    dataset_json = load_json(str(prep / "dataset.json"))
    trainer = trainer_cls(
        plans=plans,
        configuration=CONFIGURATION,
        fold=FOLD,
        dataset_json=dataset_json,
        device=torch.device(device),
    )
    trainer.on_epoch_end_hook = _epoch_hook(trainer, progress, cancelled)
    os.environ["nnUNet_n_proc_DA"] = "0"  # augmentation in this thread: no background processes
    trainer.run_training()
    model_dir = Path(trainer.output_folder).parent
    axes = trainer.inference_allowed_mirroring_axes or ()
    weights = {"network_weights": trainer.network.state_dict(), "mirror_axes": [int(a) for a in axes]}
    torch.save(weights, model_dir / WEIGHTS)
    return model_dir


def _epoch_hook(trainer, progress, cancelled):
    def hook() -> None:
        epoch = trainer.current_epoch  # already advanced past the finished epoch
        if progress is not None:
            progress(epoch, trainer.num_epochs, trainer.last_train_loss)
        if cancelled is not None and cancelled():
            trainer.num_epochs = epoch  # the loop ends; on_train_end saves checkpoint_final.pth

    return hook


def _short_trainer(schedule: NnunetSchedule):
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    class ServiceTrainer(nnUNetTrainer):
        """nnU-Net's trainer with the schedule the caller chose and a hook after each epoch."""

        on_epoch_end_hook: Callable[[], None] | None = None
        last_train_loss = float("nan")

        # nnU-Net reads the subclass's own signature (it records the arguments): no *args here
        def __init__(self, plans: dict, configuration: str, fold, dataset_json: dict, device=None):
            super().__init__(plans, configuration, fold, dataset_json, device)
            self.num_epochs = schedule.epochs
            self.num_iterations_per_epoch = schedule.iterations
            self.num_val_iterations_per_epoch = schedule.val_iterations

        def on_train_epoch_end(self, train_outputs):
            super().on_train_epoch_end(train_outputs)
            self.last_train_loss = float(np.mean([o["loss"] for o in train_outputs]))

        def on_epoch_end(self):
            super().on_epoch_end()
            if self.on_epoch_end_hook is not None:
                self.on_epoch_end_hook()

        def perform_actual_validation(self, save_probabilities: bool = False):
            return None  # the service measures the version on the project's own validation cases

    return ServiceTrainer


def predictor_load(model_dir: Path, *, device: str = "cpu", mirroring: bool = True):
    """nnU-Net's sliding-window predictor (Gaussian-weighted tiles; mirroring = its test-time augmentation)
    on a trained model folder. What `initialize_from_trained_model_folder` does, without its two hazards: it
    unpickles the whole checkpoint (weights_only=False) and imports every trainer module of nnU-Net to find
    the class by name; the weights here load with weights_only=True and the network is nnU-Net's default."""
    import torch
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    dataset_json = load_json(str(model_dir / "dataset.json"))
    plans = PlansManager(load_json(str(model_dir / "plans.json")))
    config = plans.get_configuration(CONFIGURATION)
    saved = torch.load(model_dir / WEIGHTS, map_location="cpu", weights_only=True)
    network = nnUNetTrainer.build_network_architecture(
        plans,
        config,
        determine_num_input_channels(plans, config, dataset_json),
        plans.get_label_manager(dataset_json).num_segmentation_heads,
        enable_deep_supervision=False,
    )
    network.load_state_dict(saved["network_weights"])
    predictor = nnUNetPredictor(
        tile_step_size=0.5,
        use_gaussian=True,
        use_mirroring=mirroring,
        perform_everything_on_device=False,
        device=torch.device(device),
        allow_tqdm=False,
    )
    axes = tuple(int(a) for a in saved["mirror_axes"]) or None
    predictor.manual_initialization(
        network, plans, config, [saved["network_weights"]], dataset_json, "nnUNetTrainer", axes
    )
    return predictor


def predict_probabilities(
    predictor, image: np.ndarray, spacing: tuple[float, float] = (1.0, 1.0)
) -> np.ndarray:
    """(K, H, W) class probabilities for one (C, H, W) image, in the image's own grid."""
    data = image.astype(np.float32)[:, None]  # (C, 1, H, W): a 2D image as nnU-Net's pseudo-3D
    props = {"spacing": [999.0 * max(spacing), float(spacing[0]), float(spacing[1])]}
    _, probs = predictor.predict_single_npy_array(data, props, None, None, True)
    return np.asarray(probs, dtype=np.float32)[:, 0]


# --- running it: a fresh interpreter per run ------------------------------------------------------------
# nnU-Net's fingerprint and preprocessing start process pools ("spawn"), which a Celery pool process (a
# daemon) may not do; and a run's memory should go back to the OS when it ends. So the service runs plan,
# preprocess and train in a child interpreter (`python -m workers.ml.models.nnunet`) and reads its progress
# from marked JSON lines on its output.

MARK = "HITL-NNUNET "


@dataclass(frozen=True)
class FitResult:
    model_dir: Path | None  # None when cancelled or failed
    plan: dict
    cancelled: bool = False
    error: str = ""


def fit_in_subprocess(
    root: Path,
    dataset_id: int,
    schedule: NnunetSchedule,
    *,
    threads: int = 1,
    progress: Callable[[int, int, float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    log: Callable[[str], None] | None = None,
) -> FitResult:
    """Plan, preprocess and train the raw dataset already written under root (raw_dataset_write) in a child
    interpreter. progress(epoch, epochs, loss) per epoch; should_stop() true ends the child (cancelled)."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", __name__, "--root", str(root), "--dataset-id", str(dataset_id)]
    cmd += [
        "--epochs",
        str(schedule.epochs),
        "--iterations",
        str(schedule.iterations),
        "--threads",
        str(threads),
    ]
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS=str(threads))
    # The child dies with the process that started it: a killed worker leaves no nnU-Net training on.
    proc = subprocess.Popen(
        cmd,
        preexec_fn=die_with_parent,  # only a prctl call between fork and exec
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=Path(__file__).parents[3],
    )
    plan: dict = {}
    model_dir: Path | None = None
    tail: list[str] = []
    try:
        for line in proc.stdout or ():
            if should_stop is not None and should_stop():
                proc.kill()
                proc.wait()
                return FitResult(None, plan, cancelled=True)
            if not line.startswith(MARK):
                tail = [*tail[-19:], line.rstrip()]
                if log is not None:
                    log(line.rstrip())
                continue
            event = json.loads(line[len(MARK) :])
            if event["event"] == "planned":
                plan = event["plan"]
            elif event["event"] == "epoch" and progress is not None:
                progress(event["epoch"], event["epochs"], event["loss"])
            elif event["event"] == "done":
                model_dir = Path(event["model_dir"])
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    if proc.returncode != 0 or model_dir is None:
        return FitResult(
            None, plan, error=f"nnU-Net exited with code {proc.returncode}: " + " | ".join(tail[-5:])
        )
    return FitResult(model_dir, plan)


def trained_load(model_dir: Path):
    """(NnunetNetwork with the trained weights, eval mode; plans; dataset.json) from a model folder."""
    import torch

    from workers.ml.models.nnunet_network import NnunetNetwork

    plans = json.loads((model_dir / "plans.json").read_text())
    dataset_json = json.loads((model_dir / "dataset.json").read_text())
    model = NnunetNetwork(plans, dataset_json)
    saved = torch.load(model_dir / WEIGHTS, map_location="cpu", weights_only=True)
    model.network.load_state_dict(saved["network_weights"])
    return model.eval(), plans, dataset_json


def _emit(event: str, **fields) -> None:
    print(MARK + json.dumps({"event": event, **fields}, default=_plain), flush=True)


def _plain(value):
    return value.tolist() if hasattr(value, "tolist") else str(value)


def _main(argv: Sequence[str] | None = None) -> int:
    import argparse

    import torch

    parser = argparse.ArgumentParser(description="plan, preprocess and train nnU-Net's 2d configuration")
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--dataset-id", type=int, required=True)
    parser.add_argument("--epochs", type=int, default=NnunetSchedule.epochs)
    parser.add_argument("--iterations", type=int, default=NnunetSchedule.iterations)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, args.threads))
    schedule = NnunetSchedule(epochs=args.epochs, iterations=args.iterations)
    with nnunet_folders(args.root):
        plan = plan_and_preprocess(args.dataset_id)
        _emit(
            "planned",
            plan={k: plan[k] for k in ("patch_size", "batch_size", "normalization_schemes", "spacing")},
        )
        model_dir = train(
            args.dataset_id,
            schedule=schedule,
            device="cuda" if torch.cuda.is_available() else "cpu",  # a GPU worker trains on its GPU
            progress=lambda e, n, loss: _emit("epoch", epoch=e, epochs=n, loss=loss),
        )
    _emit("done", model_dir=str(model_dir))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
