"""Query strategies: pick the next cases to label from a *scored pool*, through modAL.

Scoring (forward passes, MC dropout) is expensive and lives in ``workers.ml.al.scoring``; a strategy only reads
the resulting ``PoolScores``. To let modAL's own learners and query functions do the choosing, the pool is
wrapped in a scikit-learn classifier whose samples are *case indices*: ``X`` is an integer array (n, 1) of
indices into the PoolScores and ``predict_proba(X)`` returns their aggregated class probabilities
``mean_probs``. ``ActiveLearner.query`` / ``Committee.query`` then run modAL's uncertainty, disagreement and
ranked-batch code unchanged.

One entry point: ``select(name, scores=..., n=..., rng=..., labelled_idx=...)`` -> distinct case indices.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from modAL.batch import uncertainty_batch_sampling
from modAL.disagreement import max_disagreement_sampling, vote_entropy_sampling
from modAL.models import ActiveLearner, Committee
from modAL.uncertainty import entropy_sampling, margin_sampling, uncertainty_sampling
from modAL.utils.selection import multi_argmax
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import NotFittedError

if TYPE_CHECKING:  # scoring imports torch; strategies only read the dataclass's arrays
    from workers.ml.al.scoring import PoolScores

STRATEGIES = (
    "random",
    "fg_random",
    "least_confidence",
    "margin",
    "entropy",
    "bald",
    "committee",
    "diverse",
    "coldstart",
)
# A case counts as "predicted foreground" for fg_random above this predicted foreground pixel fraction;
# a handful of stray pixels on a 64x64 slice (~0.1%) is noise, not a structure.
FG_MIN_FRACTION = 1e-3


class ScoredPoolClassifier(ClassifierMixin, BaseEstimator):
    """scikit-learn view of a scored pool: samples are case indices, probabilities come from scoring.

    ``X`` is (n,) or (n, 1) integer case indices into ``scores`` -- unless ``case_index`` is passed to
    ``predict_proba``, in which case the rows of ``X`` are features of those cases (modAL's ranked batch
    measures distances on the rows of X, so for "diverse" X holds embeddings) and ``case_index`` says
    which cases they are. ``fit`` learns nothing: the segmentation network is trained outside modAL; it
    only records the classes (0..K-1) so modAL's committee code can align the members.
    """

    def __init__(self, scores: PoolScores | None = None) -> None:
        self.scores = scores

    def fit(self, X: np.ndarray, y: np.ndarray | None = None) -> ScoredPoolClassifier:
        if self.scores is None:
            raise ValueError("ScoredPoolClassifier needs PoolScores to fit")
        self.classes_ = np.arange(np.asarray(self.scores.mean_probs).shape[1])
        return self

    def _rows(self, X: np.ndarray, case_index: np.ndarray | None) -> np.ndarray:
        if not hasattr(self, "classes_"):
            raise NotFittedError("call fit() first")
        idx = np.asarray(case_index if case_index is not None else X).reshape(len(X), -1)[:, 0]
        if not np.all(np.equal(np.mod(idx, 1), 0)):
            raise ValueError("X must hold integer case indices (or pass case_index)")
        return idx.astype(np.int64)

    def predict_proba(self, X: np.ndarray, case_index: np.ndarray | None = None) -> np.ndarray:
        """Aggregated class probabilities (n, K) of the cases in X (see class docstring)."""
        assert self.scores is not None
        return np.asarray(self.scores.mean_probs, dtype=np.float64)[self._rows(X, case_index)]

    def predict(self, X: np.ndarray, case_index: np.ndarray | None = None) -> np.ndarray:
        return self.classes_[np.argmax(self.predict_proba(X, case_index), axis=1)]

    def case_scores(self, X: np.ndarray, field: str) -> np.ndarray:
        """A per-case scalar field of the PoolScores (e.g. "bald") for the cases in X."""
        assert self.scores is not None
        return np.asarray(getattr(self.scores, field), dtype=np.float64)[self._rows(X, None)]


def as_samples(idx: Sequence[int] | np.ndarray) -> np.ndarray:
    """Case indices as modAL samples: int64 (n, 1)."""
    return np.asarray(idx, dtype=np.int64).reshape(-1, 1)


def make_learner(
    scores: PoolScores, query_strategy: Callable[..., Any], labelled_idx: Sequence[int] | np.ndarray = ()
) -> ActiveLearner:
    """An ActiveLearner over the scored pool, taught the labelled cases (their y is unused)."""
    estimator = ScoredPoolClassifier(scores).fit(as_samples(np.arange(len(scores.mean_probs))))
    learner = ActiveLearner(estimator=estimator, query_strategy=query_strategy)
    if len(labelled_idx):
        # Registered as modAL training data (ranked batch needs it); y is a placeholder, see fit().
        learner.X_training = as_samples(labelled_idx)
        learner.y_training = np.zeros(len(labelled_idx), dtype=np.int64)
    return learner


def bald_sampling(
    classifier: ActiveLearner, X: np.ndarray, n_instances: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """modAL query strategy: the cases with the highest BALD (mutual information) score."""
    bald = classifier.estimator.case_scores(X, "bald")
    return multi_argmax(bald, n_instances=n_instances)


_UNCERTAINTY: dict[str, Callable[..., Any]] = {
    "least_confidence": uncertainty_sampling,
    "margin": margin_sampling,
    "entropy": entropy_sampling,
    "bald": bald_sampling,
}
_DISAGREEMENT: dict[str, Callable[..., Any]] = {
    "max_disagreement": max_disagreement_sampling,
    "vote_entropy": vote_entropy_sampling,
}


def _n_cases(
    scores: PoolScores | None,
    committee_scores: Sequence[PoolScores] | None,
    features: np.ndarray | None,
    pool_size: int | None,
) -> int:
    if scores is not None:
        return len(scores.mean_probs)
    if committee_scores:
        return len(committee_scores[0].mean_probs)
    if features is not None:
        return len(features)
    if pool_size is not None:
        return int(pool_size)
    raise ValueError("cannot tell the pool size: pass scores, committee_scores, features or pool_size")


def _need(value: Any, name: str, strategy: str) -> Any:
    if value is None:
        raise ValueError(f"strategy {strategy!r} needs {name}")
    return value


def standardise(features: np.ndarray) -> np.ndarray:
    """Z-score each feature column so no single embedding channel dominates Euclidean distances."""
    f = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
    std = f.std(axis=0)
    return (f - f.mean(axis=0)) / np.where(std > 0, std, 1.0)


def k_center_greedy(features: np.ndarray, n: int, candidates: np.ndarray, labelled: np.ndarray) -> np.ndarray:
    """Greedy k-center (farthest-first) over standardised features: O(n_cases x n) distances.

    Starts from the labelled cases; with none, from the candidate nearest the pool mean (a cheap
    medoid), so the first pick is a typical case and later picks cover the far clusters.
    """
    f = standardise(features)
    chosen: list[int] = []
    if len(labelled):
        dist = np.min(((f[candidates, None, :] - f[None, labelled, :]) ** 2).sum(-1), axis=1)
    else:
        first = int(candidates[np.argmin(((f[candidates] - f.mean(axis=0)) ** 2).sum(-1))])
        chosen.append(first)
        dist = ((f[candidates] - f[first]) ** 2).sum(-1)
    while len(chosen) < n:
        dist = np.where(np.isin(candidates, chosen), -np.inf, dist)
        pick = int(candidates[int(np.argmax(dist))])
        chosen.append(pick)
        dist = np.minimum(dist, ((f[candidates] - f[pick]) ** 2).sum(-1))
    return np.asarray(chosen[:n], dtype=np.int64)


def intensity_features(images: Sequence[np.ndarray], bins: int = 16, thumb: int = 8) -> np.ndarray:
    """Model-free case features for coldstart: an intensity histogram plus a thumbnail (N, bins + thumb^2).

    Images are prepared arrays (C, H, W) or (H, W); the range over ALL images sets the histogram bins
    (shared bins make histograms comparable), so raw HU and normalised inputs both work.
    """
    from scipy import ndimage

    rows = []
    lo = min(float(np.min(im)) for im in images)
    hi = max(float(np.max(im)) for im in images)
    for im in images:
        plane = np.asarray(im, dtype=np.float32)
        plane = plane.mean(axis=0) if plane.ndim == 3 else plane
        hist = np.histogram(plane, bins=bins, range=(lo, hi if hi > lo else lo + 1))[0] / plane.size
        small = ndimage.zoom(plane, (thumb / plane.shape[0], thumb / plane.shape[1]), order=1)[:thumb, :thumb]
        rows.append(np.concatenate([hist, small.ravel() / (abs(hi - lo) or 1.0)]))
    return np.asarray(rows, dtype=np.float64)


def _pick_random(pool: np.ndarray, k: int, **_: Any) -> np.ndarray:
    return pool[:k]  # `pool` arrives shuffled by the caller's rng


def _pick_fg_random(pool: np.ndarray, k: int, scores: PoolScores | None, **_: Any) -> np.ndarray:
    """Random among cases with predicted foreground first, then random among the rest (fallback)."""
    if scores is None:
        return pool[:k]
    fg = np.asarray(scores.foreground_fraction)[pool] > FG_MIN_FRACTION
    return np.concatenate([pool[fg], pool[~fg]])[:k]


def _pick_uncertain(
    pool: np.ndarray, k: int, name: str, scores: PoolScores | None, labelled: np.ndarray, **_: Any
) -> np.ndarray:
    learner = make_learner(_need(scores, "scores", name), _UNCERTAINTY[name], labelled)
    query_idx, _rows = learner.query(as_samples(pool), n_instances=k)
    return pool[np.asarray(query_idx, dtype=np.int64)]


def _pick_committee(
    pool: np.ndarray,
    k: int,
    committee_scores: Sequence[PoolScores] | None,
    labelled: np.ndarray,
    disagreement: str,
    **_: Any,
) -> np.ndarray:
    members = list(_need(committee_scores, "committee_scores", "committee"))
    if len(members) < 2:
        raise ValueError("strategy 'committee' needs at least 2 PoolScores (model snapshots or an ensemble)")
    learners = [make_learner(s, uncertainty_sampling, labelled) for s in members]
    committee = Committee(learner_list=learners, query_strategy=_DISAGREEMENT[disagreement])
    query_idx, _rows = committee.query(as_samples(pool), n_instances=k)
    return pool[np.asarray(query_idx, dtype=np.int64)]


def _pick_diverse(
    pool: np.ndarray, k: int, scores: PoolScores | None, labelled: np.ndarray, **_: Any
) -> np.ndarray:
    """modAL ranked batch (Cardoso et al.): uncertainty x distance to the labelled set, on embeddings."""
    scores = _need(scores, "scores", "diverse")
    emb = standardise(scores.embeddings)
    learner = make_learner(scores, uncertainty_batch_sampling, ())
    if len(labelled):
        learner.X_training = emb[labelled]  # ranked batch measures distances to these rows
        learner.y_training = np.zeros(len(labelled), dtype=np.int64)
    query_idx, _rows = learner.query(emb[pool], n_instances=k, case_index=pool)
    return pool[np.asarray(query_idx, dtype=np.int64)]


def _pick_coldstart(
    pool: np.ndarray,
    k: int,
    scores: PoolScores | None,
    features: np.ndarray | None,
    labelled: np.ndarray,
    **_: Any,
) -> np.ndarray:
    feats = features if features is not None else _need(scores, "scores or features", "coldstart").embeddings
    return k_center_greedy(np.asarray(feats), k, candidates=pool, labelled=labelled)


_PICKERS: dict[str, Callable[..., np.ndarray]] = {
    "random": _pick_random,
    "fg_random": _pick_fg_random,
    "least_confidence": _pick_uncertain,
    "margin": _pick_uncertain,
    "entropy": _pick_uncertain,
    "bald": _pick_uncertain,
    "committee": _pick_committee,
    "diverse": _pick_diverse,
    "coldstart": _pick_coldstart,
}


def select(
    name: str,
    *,
    scores: PoolScores | None,
    n: int,
    rng: np.random.Generator,
    labelled_idx: Sequence[int] | np.ndarray = (),
    committee_scores: Sequence[PoolScores] | None = None,
    features: np.ndarray | None = None,
    pool_size: int | None = None,
    disagreement: str = "max_disagreement",
) -> np.ndarray:
    """Choose the next cases to label. Returns int64 indices into the pool.

    Contract: exactly ``min(n, pool size - labelled)`` distinct indices, none of them in `labelled_idx`.
    The pool size comes from `scores` (or `committee_scores`, `features`, `pool_size`). `rng` shuffles the
    pool before ranking, so ties break at random but reproducibly. Needs, by strategy: "random" nothing;
    "fg_random" scores (falls back to random without); uncertainty ones and "diverse" scores; "committee"
    two or more `committee_scores` (``disagreement``: "max_disagreement" (KL) or "vote_entropy");
    "coldstart" `features` (e.g. ``intensity_features``) or ``scores.embeddings`` of an untrained network.
    """
    if name not in _PICKERS:
        raise ValueError(f"unknown strategy {name!r}; expected one of {STRATEGIES}")
    if disagreement not in _DISAGREEMENT:
        raise ValueError(f"unknown disagreement {disagreement!r}; expected one of {tuple(_DISAGREEMENT)}")
    if n < 0:
        raise ValueError("n must be >= 0")
    total = _n_cases(scores, committee_scores, features, pool_size)
    labelled = np.unique(np.asarray(labelled_idx, dtype=np.int64))
    if labelled.size and (labelled.min() < 0 or labelled.max() >= total):
        raise ValueError(f"labelled_idx out of range for a pool of {total} cases")
    unlabelled = np.setdiff1d(np.arange(total, dtype=np.int64), labelled)
    k = min(n, len(unlabelled))
    if k == 0:
        return np.empty(0, dtype=np.int64)
    pool = rng.permutation(unlabelled)
    picked = _PICKERS[name](
        pool=pool,
        k=k,
        name=name,
        scores=scores,
        committee_scores=committee_scores,
        features=features,
        labelled=labelled,
        disagreement=disagreement,
    )
    picked = np.asarray(picked, dtype=np.int64)
    # modAL's functions are trusted but the contract is ours: fail loudly rather than mislabel.
    if len(picked) != k or len(np.unique(picked)) != k or np.isin(picked, labelled).any():
        raise RuntimeError(f"strategy {name!r} broke the selection contract: {picked.tolist()}")
    return picked
