"""Active-learning simulation: split rule, Dice, labels-to-target bookkeeping, the loop, and --quick end to end."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from workers.ml.al.scoring import PoolScores
from workers.ml.imaging.datasets import VolumeSlice
from workers.ml.models.metrics import set_metrics
from workers.ml.research import simulate
from workers.ml.research.sim_data import POOL, TEST, VAL, SimTask, assign_splits
from workers.ml.research.sim_loop import LoopConfig, RunResult, epochs_for, run_strategy, start_seed


def _slice(axis: str, index: int, n: int) -> VolumeSlice:
    z = np.zeros((4, 4), np.float32)
    return VolumeSlice(z, z.astype(np.uint8), axis, index, n)


def test_split_keeps_test_slices_away_from_other_splits():
    items = [_slice(a, i, 100) for a in ("axial", "coronal") for i in range(0, 100, 2)]
    split = assign_splits(items)
    assert {POOL, VAL, TEST} <= set(split)
    by_pos = {(s.axis, s.index): lab for s, lab in zip(items, split, strict=True)}
    for (axis, index), lab in by_pos.items():
        if lab is None:
            continue
        for nb in (index - 2, index + 2):  # the neighbouring kept-or-dropped slices on the same axis
            other = by_pos.get((axis, nb))
            assert other is None or other == lab, (axis, index, lab, other)
    kept = [lab for lab in split if lab is not None]
    assert kept.count(POOL) > kept.count(TEST) > kept.count(VAL) > 0


def test_the_simulation_scores_test_slices_by_the_pooled_dice():
    truth = np.array([[[1, 1, 0, 0]], [[0, 0, 0, 0]]])
    pred = np.array([[[1, 0, 0, 0]], [[0, 0, 0, 1]]])
    # class 1: intersection 1, |pred| 2, |truth| 2 -> 0.5; class 2 absent from both -> left out (was 1.0)
    assert set_metrics(list(pred), list(truth), 3).dice == pytest.approx(0.5)
    assert set_metrics(list(truth), list(truth), 2).dice == 1.0
    assert set_metrics(list(np.zeros_like(truth)), list(truth), 2).dice == 0.0


def test_epochs_give_about_the_requested_steps():
    cfg = LoopConfig(train_batch=8, steps_per_epoch=12)
    assert epochs_for(48, 10, cfg) == 24  # 2 steps per epoch
    assert epochs_for(48, 200, cfg) == 4  # capped at 12 steps per epoch
    assert epochs_for(5, 1000, cfg) == 1


def _run(name: str, dice: list[float], labelled: list[int]) -> RunResult:
    return RunResult(name, 0, labelled, dice)


def test_labels_to_target_and_ratio_to_random():
    assert simulate.labels_to_target([10, 20, 30], [0.5, 0.8, 0.9], 0.8) == 20
    assert simulate.labels_to_target([10, 20], [0.5, 0.6], 0.8) is None
    n = [10, 20, 30, 40]
    runs = {
        "random": [_run("random", [0.1, 0.5, 0.8, 0.96], n), _run("random", [0.1, 0.5, 0.96, 0.97], n)],
        "entropy": [_run("entropy", [0.1, 0.96, 0.97, 0.98], n), _run("entropy", [0.1, 0.5, 0.96, 0.99], n)],
        "bald": [_run("bald", [0.1, 0.96, 0.97, 0.98], n), _run("bald", [0.1, 0.2, 0.3, 0.4], n)],
    }
    summary = simulate.summarise(runs, full=[1.0, 1.0])
    assert summary["target_dice"] == pytest.approx(0.95)
    rows = summary["strategies"]
    assert rows["random"]["per_seed"] == [40, 30] and rows["random"]["mean"] == 35
    assert rows["entropy"]["mean"] == 25 and rows["entropy"]["ratio_to_random"] == pytest.approx(25 / 35)
    assert rows["bald"]["mean"] is None and rows["bald"]["reached_seeds"] == 1
    # mean curves: random [.1,.5,.88,.965] -> 40; entropy [.1,.73,.965,.985] -> 30; bald [.., .69] -> never
    assert [rows[k]["mean_curve"] for k in ("random", "entropy", "bald")] == [40, 30, None]
    text = simulate.format_table(summary, budget=40)
    assert "not reached (1 seeds)" in text and "20,>40" in text
    # random's Dice at the full budget: mean of .96 and .97 = .965; mean curves reach it at 40 / 30 / never
    assert summary["random_final_dice"] == pytest.approx(0.965)
    assert [rows[k]["labels_to_random_final"] for k in ("random", "entropy", "bald")] == [40, 30, None]
    assert (
        rows["entropy"]["fraction_of_budget"] == pytest.approx(0.75)
        and rows["bald"]["fraction_of_budget"] is None
    )
    assert "labels to random's Dice at the full budget (0.965)" in text


class FakeBackend:
    """Deterministic stand-in for the model core: the 'model' is the labelled count it was trained on."""

    def __init__(self, n_pool: int, k: int) -> None:
        self.n_pool, self.k = n_pool, k
        self.committee_sizes: list[int] = []

    def fit(self, task: SimTask, idx: np.ndarray, *, steps: int, seed: int, init_state: Any | None) -> Any:
        return {"n": len(idx), "seed": seed}

    def state(self, model: Any) -> Any:
        return dict(model)

    def load(self, state: Any) -> Any:
        return dict(state)

    def score(self, model: Any, images: np.ndarray) -> PoolScores:
        g = np.random.default_rng(model["n"] + 31 * model["seed"])
        probs = g.dirichlet(np.ones(self.k), size=len(images)).astype(np.float32)
        z = g.random(len(images)).astype(np.float32)
        return PoolScores(z, z, z, z, z, probs, z, g.normal(size=(len(images), 3)), [])

    def predict(self, model: Any, images: np.ndarray) -> np.ndarray:
        return np.zeros((len(images), 4, 4), np.uint8)


def _fake_task(n: int = 30) -> SimTask:
    g = np.random.default_rng(0)
    images = g.random((n + 6, 1, 4, 4)).astype(np.float32)
    masks = np.zeros((n + 6, 4, 4), np.uint8)
    return SimTask(
        "fake", images, masks, "MR", {1: "x"}, ("axial",) * (n + 6), np.arange(n + 6),
        pool=np.arange(n), val=np.arange(n, n + 3), test=np.arange(n + 3, n + 6),
    )  # fmt: skip


@pytest.mark.parametrize("strategy", ["random", "fg_random", "entropy", "bald", "committee", "diverse"])
def test_loop_labels_distinct_cases_up_to_the_budget(strategy, monkeypatch):
    task, cfg = _fake_task(), LoopConfig(initial=4, batch=5, budget=17)
    backend = FakeBackend(len(task.pool), 2)
    seen: list[int] = []
    import workers.ml.research.sim_loop as loop

    real_select = loop.select

    def spy(name, **kw):
        if name == "committee":
            seen.append(len(kw["committee_scores"]))
        return real_select(name, **kw)

    monkeypatch.setattr(loop, "select", spy)
    start = start_seed(backend, task, cfg, seed=1)
    result = run_strategy(backend, task, cfg, strategy, 1, start)
    assert result.labelled == [4, 9, 14, 17]
    chosen = [i for batch in result.selected for i in batch]
    assert len(chosen) == len(set(chosen)) == 17 and all(0 <= i < len(task.pool) for i in chosen)
    if strategy == "committee":
        assert seen == [2, 2, 3]  # second seed-set model first, then a snapshot ensemble of <= 3 rounds


def test_quick_simulation_end_to_end(tmp_path, capsys):
    out = tmp_path / "sim"
    argv = ["--dataset", "mni152_tissue", "--seeds", "1", "--budget", "6", "--batch", "2", "--initial", "2"]
    argv += ["--strategies", "random,fg_random,entropy,bald,committee,diverse", "--out", str(out), "--quick"]
    assert simulate.main(argv) == 0
    doc = json.loads((out / "mni152_tissue.json").read_text())
    png = (out / "mni152_tissue.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert set(doc["curves"]) == {"random", "fg_random", "entropy", "bald", "committee", "diverse"}
    for runs in doc["curves"].values():
        (run,) = runs
        assert run["labelled"] == [2, 4, 6]
        assert all(0.0 <= d <= 1.0 for d in run["test_dice"])
        chosen = [i for batch in run["selected"] for i in batch]
        assert len(set(chosen)) == 6 and max(chosen) < doc["split"]["pool"]
    assert doc["split"]["test"] > 0 and doc["split"]["val"] > 0
    assert 0.0 <= doc["summary"]["target_dice"] == pytest.approx(0.95 * doc["summary"]["full_data_dice"])
    printed = capsys.readouterr().out
    assert "labels to 95%" in printed and "ratio to random" in printed


def test_unknown_strategy_is_rejected(tmp_path):
    assert simulate.main(["--dataset", "mni152_tissue", "--strategies", "magic", "--out", str(tmp_path)]) == 2
