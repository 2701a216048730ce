"""Scoring the pool with the active model and writing the reader queue order from it.

`scoring_run` is the expensive half (MC-dropout forward passes over every open pool case, one task per chunk
of cases: workers.services.scoring_chunks); the strategy (ml.strategies, through modAL) then ranks all of
them, and the order goes to the queue only through `workers.services.queue_order.queue_priorities_set`. Proposals and explanations are enqueued afterwards, the
head of the queue first. `queue_cold_start` orders the pool without a model (diversity of intensities).
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from django.db import transaction
from django.utils import timezone

from annotations.models import Case, CaseSplit, Project
from hitl.core import task_names
from hitl.core.lanes import INTERACTIVE
from hitl.core.outbox import outbox_enqueue
from workers.ml.al.scoring import PoolScores
from workers.ml.al.strategies import intensity_features, select
from workers.ml.backends import BUILTIN_BACKEND, ModelBackend, backend_for
from workers.ml.explain.policy import DEFAULT_METHODS, is_interactive
from workers.ml.models.device import limit_cpu_threads
from workers.models import CaseScore, ModelVersion, VersionState
from workers.selectors.datasets import open_pool_cases
from workers.selectors.settings import training_settings_for
from workers.services.datasets import SliceLoader, load_images, loader_for
from workers.services.queue_order import QueueEntry, queue_priorities_set, reading_policy_route
from workers.services.registry import active_version
from workers.services.scoring_chunks import (
    CHUNK_SIZE,
    chunk_advance,
    chunk_case_ids,
    chunk_count,
    chunk_save,
    chunks_delete,
    chunks_load,
    current_state,
    scores_concat,
    scoring_abandon,
    scoring_begin,
    scoring_finish,
)
from workers.services.weights import model_load

log = logging.getLogger(__name__)

HEAD_SIZE = 20  # proposals/explanations for the first cases of the queue are enqueued first
RANKED_HEAD_LIMIT = 500  # quadratic strategies (diverse, coldstart) rank this many; the rest follow
COMPONENTS = ("entropy", "bald", "margin", "least_confidence", "variance", "foreground_fraction")
QUADRATIC = frozenset({"diverse", "coldstart"})


@dataclass(frozen=True)
class Ranking:
    case_ids: list[int]  # queue order, first = read first
    strategy: str  # the strategy actually used


def score_cases(
    model,
    cases: Sequence[Case],
    *,
    mc_samples: int,
    chunk_size: int = CHUNK_SIZE,
    loader: SliceLoader | None = None,
    backend: ModelBackend | None = None,
) -> PoolScores:
    """Uncertainty scores of `cases` (image joined) from `backend`'s predictive samples (default: the
    built-in backend's: MC dropout, or mirror TTA for a network without dropout), `chunk_size` cases in memory
    at a time, prepared by `loader` (the version's: `loader_for(version.config)`; default one slice per
    case)."""
    loader = loader or SliceLoader()
    backend = backend or backend_for({"backend": BUILTIN_BACKEND})
    parts = []
    for start in range(0, len(cases), chunk_size):
        images = load_images(cases[start : start + chunk_size], loader)
        parts.append(backend.score(model, images, samples=mc_samples))
    return scores_concat(parts)


def rank_pool(
    strategy: str, *, scores: PoolScores | None, n: int, rng: np.random.Generator, features=None
) -> tuple[np.ndarray, str]:
    """A full ranking (indices 0..n-1, first = pick first) and the strategy name used. "committee" needs
    several models' scores; with one active model it falls back to BALD (MC-dropout disagreement).
    Quadratic strategies rank the first RANKED_HEAD_LIMIT; the rest follow by entropy (or at random)."""
    used = "bald" if strategy == "committee" else strategy
    k = min(n, RANKED_HEAD_LIMIT) if used in QUADRATIC else n
    head = select(used, scores=scores, n=k, rng=rng, features=features, pool_size=n)
    rest = np.setdiff1d(np.arange(n), head)
    if len(rest):
        key = -np.asarray(scores.entropy)[rest] if scores is not None else rng.random(len(rest))
        rest = rest[np.argsort(key, kind="stable")]
    return np.concatenate([head, rest]).astype(np.int64), used


def strategy_scores(strategy: str, scores: PoolScores) -> np.ndarray | None:
    """The per-case quantity the strategy ranks by, as modAL computes it (higher = picked earlier); None for
    strategies without one (random, fg_random, diverse, coldstart)."""
    if strategy in ("least_confidence", "margin", "bald"):
        return np.asarray(getattr(scores, strategy), dtype=np.float64)
    if strategy == "entropy":  # modAL's entropy_sampling: entropy of the aggregated class probabilities
        p = np.clip(np.asarray(scores.mean_probs, dtype=np.float64), 1e-12, 1.0)
        return -(p * np.log(p)).sum(axis=1)
    return None


def _priority(rank0: int, n: int) -> float:
    """Higher = read sooner; strictly decreasing with rank, in (0, 1]."""
    return (n - rank0) / n


def _entries(case_ids: list[int], order: np.ndarray, score_of, reason_base: dict) -> list[QueueEntry]:
    n = len(order)
    out = []
    for rank0, idx in enumerate(order):
        score = score_of(int(idx), rank0)
        reason = {**reason_base, "score": score, "rank": rank0 + 1}
        out.append(QueueEntry(case_id=case_ids[int(idx)], priority=_priority(rank0, n), reason=reason))
    return out


def scoring_run(*, project_id: int, version_id: int, run: str = "", chunk: int = 0) -> int:
    """Re-score the open pool with `version` (if it is still the active one) in chunks of CHUNK_SIZE
    cases, one task each (workers.services.scoring_chunks), then write CaseScore rows and the queue order
    and enqueue proposals and explanations (queue head first). The first call (no `run`) starts a new
    scoring and scores chunk 0; each chunk enqueues the next; the last ranks the pool. Returns the cases
    scored by this call. Idempotent: a redelivered or superseded chunk does nothing, and a rerun for the
    same version replaces that version's scores."""
    version = (
        ModelVersion.objects.select_related("project").filter(pk=version_id, project_id=project_id).first()
    )
    if version is None:
        return 0
    if version.state != VersionState.ACTIVE:
        scoring_abandon(version)  # promoted past or rolled back mid-scoring: its chunks are dropped
        return 0
    if not run:
        ids = [c.pk for c in open_pool_cases(project=version.project)]
        if not ids:
            queue_priorities_set(project=version.project, entries=[])
            _enqueue_test_proposals(version)
            return 0
        run = scoring_begin(version, ids)["run"]
    due = current_state(version.pk, run, chunk)
    return _score_chunk(version, due, chunk) if due is not None else 0


def _score_chunk(version: ModelVersion, state: dict, index: int) -> int:
    limit_cpu_threads()
    run, n = state["run"], chunk_count(state)
    by_id = Case.objects.select_related("image").in_bulk(chunk_case_ids(state, index))
    cases = [by_id[pk] for pk in chunk_case_ids(state, index) if pk in by_id]  # deleted meanwhile: dropped
    mc = int(version.config.get("scoring", {}).get("mc_samples", 5))
    scores = score_cases(
        model_load(version),
        cases,
        mc_samples=mc,
        loader=loader_for(version.config),
        backend=backend_for(version.config),
    )
    chunk_save(version, run, index, [c.pk for c in cases], scores)
    if not chunk_advance(version.pk, run, index, len(cases)):
        return 0
    if index + 1 < n:
        kwargs = {"project_id": version.project_id, "version_id": version.pk, "run": run, "chunk": index + 1}
        outbox_enqueue(task=task_names.SCORING_RUN, kwargs=kwargs)
        return len(cases)
    ids, all_scores = chunks_load(version, run, n)
    _rank_and_store(version, ids, all_scores)
    chunks_delete(version, run, n)
    scoring_finish(version.pk, run)
    return len(cases)


def _rank_and_store(version: ModelVersion, ids: list[int], scores: PoolScores) -> None:
    rng = np.random.default_rng(version.pk)
    strategy = training_settings_for(version.project).query_strategy
    order, used = rank_pool(strategy, scores=scores, n=len(ids), rng=rng)
    ordered_ids = _store_scores(version=version, case_ids=ids, scores=scores, order=order, strategy=used)
    if ordered_ids:
        methods = list(version.config.get("explain_methods", DEFAULT_METHODS))
        transaction.on_commit(lambda: _enqueue_followups(version.pk, ordered_ids, methods))
    _enqueue_test_proposals(version)  # after the pool's: readers wait for those


@transaction.atomic
def _store_scores(
    *, version: ModelVersion, case_ids: list[int], scores: PoolScores, order: np.ndarray, strategy: str
) -> list[int]:
    # Lock the version so a promote/rollback racing with us is seen: only the active version sets the queue.
    # FOR NO KEY UPDATE of the version row alone: a submission meanwhile holds its case's row and inserts an
    # annotation whose foreign keys (the proposal's version, the project of its audit event) take KEY SHARE
    # locks; FOR UPDATE here (or of the joined project) would block those while we wait for its case row to
    # rank the pool: a deadlock (one in 1,519 soak submissions got a 503 from it).
    version = (
        ModelVersion.objects.select_for_update(no_key=True, of=("self",))
        .select_related("project")
        .get(pk=version.pk)
    )
    if version.state != VersionState.ACTIVE:
        return []
    n = len(order)
    values = strategy_scores(strategy, scores)

    def score_of(idx: int, rank0: int) -> float:
        return float(values[idx]) if values is not None else _priority(rank0, n)

    now = timezone.now().isoformat()
    base = {
        "strategy": strategy,
        "model_version": version.number,
        "model_version_id": version.pk,
        "scored_at": now,
    }
    entries = _entries(case_ids, order, score_of, base)
    CaseScore.objects.filter(model_version=version).delete()
    CaseScore.objects.bulk_create(
        [
            CaseScore(
                case_id=e.case_id,
                model_version=version,
                strategy=strategy,
                score=e.reason["score"],
                rank=e.reason["rank"],
                components={
                    c: float(getattr(scores, c)[int(order[e.reason["rank"] - 1])]) for c in COMPONENTS
                },
            )
            for e in entries
        ],
        batch_size=500,
    )
    queue_priorities_set(project=version.project, entries=entries)
    # Uncertainty routing: the strategy's own score where it has one, else the mean predictive entropy.
    reading_policy_route(
        project=version.project,
        case_ids=case_ids,
        uncertainty=np.asarray(values if values is not None else scores.entropy, dtype=np.float64).tolist(),
    )
    return [e.case_id for e in entries]


def _enqueue_test_proposals(version: ModelVersion) -> None:
    """The active version proposes for the labelled test cases too (after the pool's work, which readers
    wait for), so anyone can check its reported test Dice against what it draws."""
    test_ids = list(
        Case.objects.filter(project_id=version.project_id, split=CaseSplit.TEST)
        .order_by("id")
        .values_list("pk", flat=True)
    )

    def send() -> None:
        with transaction.atomic():
            for i in range(0, len(test_ids), CHUNK_SIZE):
                kwargs = {"version_id": version.pk, "case_ids": test_ids[i : i + CHUNK_SIZE]}
                outbox_enqueue(task=task_names.PROPOSAL_COMPUTE, kwargs=kwargs)

    if test_ids:
        transaction.on_commit(send)


def _batches(ids: list[int]) -> list[list[int]]:
    head, rest = ids[:HEAD_SIZE], ids[HEAD_SIZE:]
    return [head] + [rest[i : i + CHUNK_SIZE] for i in range(0, len(rest), CHUNK_SIZE)]


def _enqueue_followups(version_id: int, ordered_ids: list[int], methods: list[str]) -> None:
    """Proposals for every case, head of the queue first. Explanations by the cost policy: interactive
    methods (workers.ml.explain.explanations.is_interactive) for every case, head first; expensive ones only for the
    head (what readers open next); any other case gets them on request (explanation_request)."""
    batches = _batches(ordered_ids)
    cheap = [m for m in methods if is_interactive(m)]
    expensive = [m for m in methods if not is_interactive(m)]
    with transaction.atomic():  # one commit sends them all, in this order
        for i, batch in enumerate(batches):  # the head's proposals on the interactive lane: readers wait
            outbox_enqueue(
                task=task_names.PROPOSAL_COMPUTE,
                kwargs={"version_id": version_id, "case_ids": batch},
                queue=INTERACTIVE if i == 0 else "",
            )
        for i, batch in enumerate(batches):
            todo = cheap + expensive if i == 0 else cheap
            if todo:
                kwargs = {"version_id": version_id, "case_ids": batch, "methods": todo}
                outbox_enqueue(task=task_names.EXPLANATION_COMPUTE, kwargs=kwargs)


def queue_cold_start(*, project: Project) -> int:
    """With no active version, order the open pool by coldstart diversity of intensity features
    (ml.strategies.intensity_features + k-center greedy) and write it to the queue. Returns the cases
    ordered (0 when a version is active: scoring owns the queue then)."""
    if active_version(project=project) is not None:
        return 0
    cases = list(open_pool_cases(project=project))
    if not cases:
        return 0
    features = intensity_features(load_images(cases))
    rng = np.random.default_rng(project.pk)
    order, _ = rank_pool("coldstart", scores=None, n=len(cases), rng=rng, features=features)
    base = {
        "strategy": "coldstart",
        "model_version": None,
        "model_version_id": None,
        "scored_at": timezone.now().isoformat(),
    }
    entries = _entries([c.pk for c in cases], order, lambda _i, r: _priority(r, len(order)), base)
    with transaction.atomic():
        if active_version(project=project) is not None:  # a model arrived meanwhile: it wins
            return 0
        queue_priorities_set(project=project, entries=entries)
    return len(entries)
