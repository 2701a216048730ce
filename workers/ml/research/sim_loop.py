"""The active-learning loop of the simulation: seed set -> (score -> query -> label -> retrain -> test)*.

Labels come from the ground truth ("a perfect annotator"); each retrain warm-starts from the previous
round's weights. The committee is a snapshot ensemble: the models of the last rounds, each having scored
the whole pool (scores of the whole pool stay valid across rounds because the pool never changes); the
first query uses a second seed-set model trained with another seed, so every committee query has >= 2
real members.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np

from workers.ml.al.strategies import intensity_features, select
from workers.ml.models.metrics import set_metrics
from workers.ml.models.networks import NetworkConfig
from workers.ml.research.sim_data import SimTask

COMMITTEE_SIZE = 3
NEEDS_SCORES = {"fg_random", "least_confidence", "margin", "entropy", "bald", "diverse", "committee"}


@dataclass(frozen=True)
class LoopConfig:
    """Sizes of one simulated campaign. `budget` counts labelled pool cases including the seed set."""

    initial: int = 10
    batch: int = 10
    budget: int = 60
    seed_strategy: str = "coldstart"  # or "random"
    mc_samples: int = 5
    aggregation: str = "topk"
    topk_fraction: float = 0.1
    net: NetworkConfig = field(default_factory=lambda: NetworkConfig(channels=(8, 16, 32, 64), dropout=0.1))
    # Gradient steps, not epochs: an epoch over 10 labelled slices is 2 steps, over 200 it is 25, so a fixed
    # epoch count would under-train the early rounds. Epochs are derived from these (see `epochs_for`).
    # Sized on the validation split: with 600 steps the full-data model's best validation epoch was its last
    # (totalseg_ct 0.75/0.69, 2 seeds) and 1200 steps raised colin27's from 0.65 to 0.68; 48 steps per round
    # left the warm-started round models as undertrained. Batch Dice did not help (0.62-0.76, same range).
    steps_per_round: int = 96
    steps_per_epoch: int = 12
    full_steps: int = 1500
    train_batch: int = 8
    lr: float = 3e-3
    patience: int = 100  # rounds are short: keep every epoch, the best-on-validation state wins
    # No augmentation: with a few hundred steps per model the flips/rotations slowed convergence more than
    # they helped (validation Dice on the colin27 slab, 360 steps: 0.43-0.48 without vs 0.35-0.45 with).
    augment: bool = False
    # The service's few-labels recipe (issue 15) inside each round: a third of each batch drawn from labelled
    # slices and cropped around a label, batch Dice, poly LR decay, fixed steps per epoch with replacement.
    recipe: bool = False


RECIPE_TRAIN: dict[str, Any] = {"fg_oversample": 0.33, "batch_dice": True, "poly_lr": True}


def epochs_for(steps: int, n_train: int, cfg: LoopConfig) -> int:
    """Epochs that give about `steps` gradient steps on `n_train` slices (training.py's epoch length; with
    the recipe every epoch is `steps_per_epoch` steps drawn with replacement)."""
    per_epoch = (
        cfg.steps_per_epoch if cfg.recipe else min(math.ceil(n_train / cfg.train_batch), cfg.steps_per_epoch)
    )
    return max(1, math.ceil(steps / max(per_epoch, 1)))


class Backend(Protocol):
    """What the loop needs from the model core (the real one: `RealBackend`)."""

    def fit(
        self, task: SimTask, idx: np.ndarray, *, steps: int, seed: int, init_state: Any | None
    ) -> Any: ...

    def score(self, model: Any, images: np.ndarray) -> Any: ...

    def predict(self, model: Any, images: np.ndarray) -> np.ndarray: ...

    def state(self, model: Any) -> Any: ...

    def load(self, state: Any) -> Any: ...


class RealBackend:
    """workers.ml.models.training / inference / scoring with the sizes of a LoopConfig."""

    def __init__(self, cfg: LoopConfig, num_classes: int, modality: str) -> None:
        self.cfg = cfg
        self.net = replace(cfg.net, num_classes=num_classes)
        self.modality = modality

    def fit(self, task: SimTask, idx: np.ndarray, *, steps: int, seed: int, init_state: Any | None) -> Any:
        from workers.ml.models.training import TrainConfig, train

        train_cfg = TrainConfig(
            epochs=epochs_for(steps, len(idx), self.cfg),
            batch_size=self.cfg.train_batch,
            lr=self.cfg.lr,
            patch_size=tuple(task.images.shape[-2:]),
            early_stopping_patience=self.cfg.patience,
            seed=seed,
            augment=self.cfg.augment,
            modality=self.modality,
            max_steps_per_epoch=self.cfg.steps_per_epoch,
            **(RECIPE_TRAIN | {"steps_per_epoch": self.cfg.steps_per_epoch} if self.cfg.recipe else {}),
        )
        result = train(
            self.net,
            train_cfg,
            list(task.images[idx]),
            list(task.masks[idx]),
            list(task.images[task.val]),
            list(task.masks[task.val]),
            init_state=init_state,
        )
        return result.model

    def score(self, model: Any, images: np.ndarray) -> Any:
        from workers.ml.al.scoring import score_pool

        c = self.cfg
        return score_pool(
            model,
            list(images),
            mc_samples=c.mc_samples,
            aggregation=c.aggregation,
            topk_fraction=c.topk_fraction,
        )

    def predict(self, model: Any, images: np.ndarray) -> np.ndarray:
        from workers.ml.models.inference import predict_proba

        return np.stack([p.argmax(axis=0) for p in predict_proba(model, list(images))]).astype(np.uint8)

    def state(self, model: Any) -> Any:
        return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}

    def load(self, state: Any) -> Any:
        from workers.ml.models.networks import build_network

        model = build_network(self.net)
        model.load_state_dict(state)
        return model.eval()


@dataclass
class RunResult:
    strategy: str
    seed: int
    labelled: list[int] = field(default_factory=list)  # labelled count after each round
    test_dice: list[float] = field(default_factory=list)
    selected: list[list[int]] = field(default_factory=list)  # pool positions chosen per round
    seconds: float = 0.0


def evaluate_dice(backend: Backend, model: Any, task: SimTask) -> float:
    pred = backend.predict(model, task.images[task.test])
    return set_metrics(list(pred), list(task.masks[task.test]), task.num_classes).dice


def seed_set(task: SimTask, cfg: LoopConfig, seed: int) -> np.ndarray:
    """Positions (into task.pool) of the initial labelled set: same for every strategy of a seed."""
    rng = np.random.default_rng(seed)
    n = min(cfg.initial, len(task.pool))
    if cfg.seed_strategy == "coldstart":
        feats = intensity_features(list(task.images[task.pool]))
        return select("coldstart", scores=None, features=feats, n=n, rng=rng)
    return select("random", scores=None, n=n, rng=rng, pool_size=len(task.pool))


@dataclass(frozen=True)
class SeedStart:
    """Shared start of all strategies of one seed: seed set, its model, and a second committee member."""

    positions: np.ndarray
    state: Any
    alt_state: Any
    dice: float


def start_seed(backend: Backend, task: SimTask, cfg: LoopConfig, seed: int) -> SeedStart:
    pos = seed_set(task, cfg, seed)
    steps = cfg.steps_per_round * 2  # from scratch: longer than a warm-started round
    model = backend.fit(task, task.pool[pos], steps=steps, seed=seed, init_state=None)
    alt = backend.fit(task, task.pool[pos], steps=steps, seed=seed + 10_000, init_state=None)
    return SeedStart(pos, backend.state(model), backend.state(alt), evaluate_dice(backend, model, task))


def run_strategy(
    backend: Backend, task: SimTask, cfg: LoopConfig, strategy: str, seed: int, start: SeedStart
) -> RunResult:
    """One campaign. `rng` for the queries is derived from the seed and strategy name (reproducible)."""
    t0 = time.perf_counter()
    rng = np.random.default_rng([seed, sum(map(ord, strategy))])
    labelled = [int(i) for i in start.positions]
    out = RunResult(strategy, seed, [len(labelled)], [start.dice], [labelled.copy()])
    state = start.state
    model = backend.load(state)
    snapshots: list[Any] = []
    pool_images = task.images[task.pool]
    while len(labelled) < min(cfg.budget, len(task.pool)):
        n = min(cfg.batch, cfg.budget - len(labelled))
        scores = backend.score(model, pool_images) if strategy in NEEDS_SCORES else None
        committee = None
        if strategy == "committee":
            snapshots = (snapshots + [scores])[-COMMITTEE_SIZE:]
            committee = (
                snapshots
                if len(snapshots) >= 2
                else [scores, backend.score(backend.load(start.alt_state), pool_images)]
            )
        new = select(
            strategy,
            scores=scores,
            n=n,
            rng=rng,
            labelled_idx=labelled,
            committee_scores=committee,
            pool_size=len(task.pool),
        )
        labelled += [int(i) for i in new]
        model = backend.fit(
            task,
            task.pool[labelled],
            steps=cfg.steps_per_round,
            seed=seed + len(labelled),
            init_state=state,
        )
        state = backend.state(model)
        out.labelled.append(len(labelled))
        out.test_dice.append(evaluate_dice(backend, model, task))
        out.selected.append([int(i) for i in new])
    out.seconds = time.perf_counter() - t0
    return out


def full_data_dice(backend: Backend, task: SimTask, cfg: LoopConfig, seed: int) -> float:
    """Test Dice of a model trained from scratch on the whole pool: the ceiling of the campaign."""
    model = backend.fit(task, task.pool, steps=cfg.full_steps, seed=seed, init_state=None)
    return evaluate_dice(backend, model, task)
