"""Query strategies over a crafted scored pool: known answers, the selection contract, modAL's own paths."""

from __future__ import annotations

import numpy as np
import pytest
from modAL.models import ActiveLearner, Committee
from sklearn.base import clone

from workers.ml.al import strategies
from workers.ml.al.scoring import PoolScores
from workers.ml.al.strategies import (
    STRATEGIES,
    ScoredPoolClassifier,
    as_samples,
    intensity_features,
    k_center_greedy,
    select,
)

N, K, D = 12, 3, 4
CONFIDENT = [0.98, 0.01, 0.01]
# Hand-computed (natural log):
#   case 3 [.34,.33,.33]: least confidence 0.66, margin 0.01, entropy 1.0985 (near ln 3)
#   case 5 [.49,.49,.02]: least confidence 0.51, margin 0.00, entropy 2*.49*ln(1/.49)+.02*ln(50) = 0.7773
#   case 8 [.60,.20,.20]: least confidence 0.40, margin 0.40, entropy .6*ln(1/.6)+.4*ln 5 = 0.9503
#   every other case: least confidence 0.02, margin 0.97, entropy 0.112
SPECIAL = {3: [0.34, 0.33, 0.33], 5: [0.49, 0.49, 0.02], 8: [0.60, 0.20, 0.20]}


def make_scores(
    mean_probs: np.ndarray,
    *,
    bald: np.ndarray | None = None,
    fg: np.ndarray | None = None,
    embeddings: np.ndarray | None = None,
) -> PoolScores:
    n = len(mean_probs)
    zeros = np.zeros(n, dtype=np.float32)
    p = np.asarray(mean_probs, dtype=np.float32)
    return PoolScores(
        entropy=zeros,
        bald=zeros if bald is None else np.asarray(bald, dtype=np.float32),
        variance=zeros,
        least_confidence=(1 - p.max(axis=1)).astype(np.float32),
        margin=zeros,
        mean_probs=p,
        foreground_fraction=zeros if fg is None else np.asarray(fg, dtype=np.float32),
        embeddings=np.zeros((n, D), np.float32) if embeddings is None else np.asarray(embeddings, np.float32),
        uncertainty_maps=[np.zeros((4, 4), np.float32) for _ in range(n)],
    )


@pytest.fixture()
def crafted() -> PoolScores:
    probs = np.array([SPECIAL.get(i, CONFIDENT) for i in range(N)])
    bald = np.full(N, 0.01)
    bald[10], bald[1] = 0.9, 0.5
    fg = np.zeros(N)
    fg[[2, 6, 11]] = 0.2
    emb = np.random.default_rng(0).normal(size=(N, D))
    return make_scores(probs, bald=bald, fg=fg, embeddings=emb)


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


@pytest.mark.parametrize(
    ("name", "n", "expected"),
    [
        ("least_confidence", 1, {3}),
        ("least_confidence", 2, {3, 5}),
        ("margin", 1, {5}),
        ("margin", 2, {5, 3}),
        ("entropy", 1, {3}),
        ("entropy", 2, {3, 8}),
        ("bald", 1, {10}),
        ("bald", 2, {10, 1}),
    ],
)
def test_uncertainty_strategies_pick_the_known_most_uncertain(crafted, name, n, expected):
    assert set(select(name, scores=crafted, n=n, rng=rng()).tolist()) == expected


def test_labelled_cases_are_skipped_and_the_next_best_taken(crafted):
    assert select("least_confidence", scores=crafted, n=1, rng=rng(), labelled_idx=[3]).tolist() == [5]
    assert select("entropy", scores=crafted, n=2, rng=rng(), labelled_idx=[3]).tolist() in ([8, 5], [5, 8])
    assert select("bald", scores=crafted, n=1, rng=rng(), labelled_idx=[10]).tolist() == [1]


@pytest.mark.parametrize("name", [s for s in STRATEGIES if s != "committee"])
@pytest.mark.parametrize(
    ("n", "labelled"), [(1, ()), (4, (0, 3, 5)), (20, (1, 2)), (0, ()), (5, tuple(range(10)))]
)
def test_selection_contract(crafted, name, n, labelled):
    picked = select(name, scores=crafted, n=n, rng=rng(7), labelled_idx=labelled)
    assert picked.dtype == np.int64
    assert len(picked) == min(n, N - len(labelled))
    assert len(set(picked.tolist())) == len(picked)
    assert all(0 <= i < N for i in picked)
    assert not set(picked.tolist()) & set(labelled)


def test_committee_contract_and_disagreement(crafted):
    other = np.asarray(crafted.mean_probs).copy()
    other[9] = [0.01, 0.01, 0.98]  # the two snapshots agree everywhere except on case 9
    members = [crafted, make_scores(other)]
    for rule in ("max_disagreement", "vote_entropy"):
        picked = select("committee", scores=None, committee_scores=members, n=1, rng=rng(), disagreement=rule)
        assert picked.tolist() == [9]
    picked = select("committee", scores=None, committee_scores=members, n=30, rng=rng(), labelled_idx=[9, 0])
    assert sorted(picked.tolist()) == [i for i in range(N) if i not in (0, 9)]
    with pytest.raises(ValueError, match="at least 2"):
        select("committee", scores=None, committee_scores=[crafted], n=1, rng=rng())


def test_fg_random_prefers_predicted_foreground_and_falls_back(crafted):
    for seed in range(5):
        assert set(select("fg_random", scores=crafted, n=3, rng=rng(seed)).tolist()) == {2, 6, 11}
    five = set(select("fg_random", scores=crafted, n=5, rng=rng(1)).tolist())
    assert {2, 6, 11} < five
    no_fg = make_scores(np.asarray(crafted.mean_probs))
    assert len(select("fg_random", scores=no_fg, n=4, rng=rng())) == 4
    assert len(select("fg_random", scores=None, n=4, rng=rng(), pool_size=N)) == 4


def test_random_is_reproducible_and_needs_a_pool_size():
    a = select("random", scores=None, n=5, rng=rng(3), pool_size=50)
    b = select("random", scores=None, n=5, rng=rng(3), pool_size=50)
    c = select("random", scores=None, n=5, rng=rng(4), pool_size=50)
    assert a.tolist() == b.tolist() and a.tolist() != c.tolist()
    with pytest.raises(ValueError, match="pool size"):
        select("random", scores=None, n=1, rng=rng())


def _clusters(sizes: list[int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Tight blobs around far-apart centres; returns (features, cluster id per row)."""
    g = np.random.default_rng(seed)
    centres = np.eye(len(sizes), D) * 50.0
    feats = np.concatenate(
        [c + g.normal(scale=0.5, size=(s, D)) for c, s in zip(centres, sizes, strict=True)]
    )
    return feats, np.repeat(np.arange(len(sizes)), sizes)


def test_coldstart_covers_every_cluster():
    feats, cluster = _clusters([20, 10, 5, 3])
    probs = np.tile(CONFIDENT, (len(feats), 1))
    picked = select("coldstart", scores=make_scores(probs, embeddings=feats), n=4, rng=rng())
    assert sorted(cluster[picked].tolist()) == [0, 1, 2, 3]
    # with cluster 0 already labelled, three picks go to the three other clusters
    picked = select("coldstart", scores=None, features=feats, n=3, rng=rng(), labelled_idx=[0, 1])
    assert sorted(cluster[picked].tolist()) == [1, 2, 3]
    # random, for contrast, usually misses the 3-case cluster: it is not what makes the test pass
    assert len(k_center_greedy(feats, 4, np.arange(len(feats)), np.empty(0, np.int64))) == 4


def test_diverse_spreads_the_batch_over_unlabelled_clusters():
    feats, cluster = _clusters([10, 10, 10])
    probs = np.tile([0.6, 0.3, 0.1], (len(feats), 1))  # equal uncertainty: only diversity can decide
    scores = make_scores(probs, embeddings=feats)
    picked = select("diverse", scores=scores, n=2, rng=rng(), labelled_idx=[0, 1, 2])
    assert sorted(cluster[picked].tolist()) == [1, 2]
    picked = select("diverse", scores=scores, n=3, rng=rng())  # cold: no labelled set at all
    assert sorted(cluster[picked].tolist()) == [0, 1, 2]


def test_modal_learner_and_committee_query_paths_are_used(crafted, monkeypatch):
    calls: list[str] = []
    for cls in (ActiveLearner, Committee):
        original = cls.query

        def spy(self, *args, _original=original, _name=cls.__name__, **kwargs):
            calls.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(cls, "query", spy)
    for name in ("least_confidence", "margin", "entropy", "bald", "diverse"):
        select(name, scores=crafted, n=2, rng=rng())
    select("committee", scores=None, committee_scores=[crafted, crafted], n=2, rng=rng())
    assert calls == ["ActiveLearner"] * 5 + ["Committee"]


def test_wrapper_is_a_sklearn_classifier(crafted):
    est = ScoredPoolClassifier(crafted).fit(as_samples(range(N)))
    assert np.array_equal(est.classes_, np.arange(K))
    assert np.allclose(est.predict_proba(as_samples([3, 5])), [SPECIAL[3], SPECIAL[5]])
    assert est.predict(as_samples([8])).tolist() == [0]
    assert est.score(as_samples(range(N)), np.zeros(N)) == 1.0  # argmax is class 0 for every crafted case
    assert np.array_equal(clone(est).get_params()["scores"].mean_probs, crafted.mean_probs)
    learner = ActiveLearner(estimator=est, query_strategy=strategies.bald_sampling)
    idx, rows = learner.query(as_samples(range(N)), n_instances=1)
    assert idx.tolist() == [10] and rows.tolist() == [[10]]
    with pytest.raises(ValueError, match="integer case indices"):
        est.predict_proba(np.array([[0.5]]))


def test_intensity_features_separate_bright_from_dark_images():
    dark = [np.full((1, 16, 16), 0.1, np.float32) + 0.01 * i for i in range(5)]
    bright = [np.full((1, 16, 16), 0.9, np.float32) - 0.01 * i for i in range(2)]
    feats = intensity_features(dark + bright)
    assert feats.shape == (7, 16 + 64)
    picked = select("coldstart", scores=None, features=feats, n=2, rng=rng())
    assert sorted(int(i >= 5) for i in picked) == [0, 1]


def test_bad_arguments_fail_loudly(crafted):
    with pytest.raises(ValueError, match="unknown strategy"):
        select("nope", scores=crafted, n=1, rng=rng())
    with pytest.raises(ValueError, match="out of range"):
        select("random", scores=crafted, n=1, rng=rng(), labelled_idx=[N])
    with pytest.raises(ValueError, match="needs scores"):
        select("entropy", scores=None, n=1, rng=rng(), pool_size=N)
