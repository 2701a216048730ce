"""Pool scoring in chunks: each chunk of CHUNK_SIZE cases is its own task, so the batch worker takes other
work (a training run, an export) between chunks, the version shows its progress, and a scoring superseded
by a new version, or by a newer scoring of the same version, stops at its next chunk.

The state lives on the version (`ModelVersion.scoring`): {run, case_ids, chunk, next, total, done,
started_at, finished_at}; `chunk` (cases per task, settings.HITL_SCORING_CHUNK_CASES) is fixed when the
scoring begins. A chunk runs only when it is the version's current run and its `next` chunk (a redelivered
chunk does nothing); its scores are stored on the storage backend under a name fixed by (version, run,
chunk), so a chunk computed twice overwrites itself, and the files are deleted once the pool is ranked."""

import io
import secrets
from collections.abc import Sequence
from typing import Any

import numpy as np
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from hitl.core.storage import bytes_load, bytes_save, delete_quietly
from workers.ml.al.scoring import PoolScores
from workers.models import ModelVersion, VersionState

CHUNK_SIZE = 64  # cases in memory at a time when scoring in one call (the chunk of a task is a setting)
ARRAYS = ("entropy", "bald", "variance", "least_confidence", "margin", "mean_probs", "foreground_fraction")


def scores_concat(parts: Sequence[PoolScores]) -> PoolScores:
    """One PoolScores over all chunks (uncertainty maps dropped: strategies never read them)."""

    def cat(name: str) -> np.ndarray:
        return np.concatenate([getattr(p, name) for p in parts], axis=0)

    return PoolScores(**{n: cat(n) for n in (*ARRAYS, "embeddings")}, uncertainty_maps=[])


def _chunk(state: dict) -> int:
    return int(state.get("chunk") or CHUNK_SIZE)


def chunk_count(state: dict) -> int:
    return -(-len(state["case_ids"]) // _chunk(state))


def chunk_case_ids(state: dict, index: int) -> list[int]:
    size = _chunk(state)
    return list(state["case_ids"][index * size : (index + 1) * size])


def _name(version: ModelVersion, run: str, index: int) -> str:
    return f"projects/{version.project_id}/scoring/v{version.pk}-{run}/chunk-{index:05d}.npz"


def scoring_begin(version: ModelVersion, case_ids: list[int]) -> dict:
    """Start a new scoring of `case_ids` (this supersedes any scoring of the version still under way, whose
    stored chunks are deleted)."""
    scoring_abandon(version)
    state = {
        "run": secrets.token_hex(6),
        "case_ids": case_ids,
        "chunk": max(1, int(settings.HITL_SCORING_CHUNK_CASES)),
        "next": 0,
        "total": len(case_ids),
        "done": 0,
        "started_at": timezone.now().isoformat(),
        "finished_at": None,
    }
    ModelVersion.objects.filter(pk=version.pk).update(scoring=state)
    return state


def current_state(version_id: int, run: str, index: int) -> dict | None:
    """The scoring state when chunk `index` of `run` is due now on the still active version, else None."""
    version = ModelVersion.objects.filter(pk=version_id, state=VersionState.ACTIVE).only("scoring").first()
    state = version.scoring if version is not None else None
    if not state or state.get("run") != run or state.get("next") != index:
        return None
    return state


def chunk_save(version: ModelVersion, run: str, index: int, case_ids: list[int], scores: PoolScores) -> None:
    buf = io.BytesIO()
    arrays: dict[str, Any] = {n: np.asarray(getattr(scores, n)) for n in (*ARRAYS, "embeddings")}
    arrays["case_ids"] = np.asarray(case_ids, dtype=np.int64)
    np.savez(buf, **arrays)
    name = _name(version, run, index)
    delete_quietly([name])  # a chunk computed again (its worker died after storing it) replaces itself
    bytes_save(name, buf.getvalue())


def chunks_load(version: ModelVersion, run: str, n: int) -> tuple[list[int], PoolScores]:
    ids: list[int] = []
    parts = []
    for index in range(n):
        with np.load(io.BytesIO(bytes_load(_name(version, run, index))), allow_pickle=False) as data:
            ids += data["case_ids"].tolist()
            parts.append(PoolScores(**{k: data[k] for k in (*ARRAYS, "embeddings")}, uncertainty_maps=[]))
    return ids, scores_concat(parts)


def chunks_delete(version: ModelVersion, run: str, n: int) -> None:
    delete_quietly([_name(version, run, index) for index in range(n)])


@transaction.atomic
def chunk_advance(version_id: int, run: str, index: int, scored: int) -> bool:
    """Mark chunk `index` done (under the version's row lock); False when it is no longer due (another
    delivery did it, or the run was superseded): the caller then stops."""
    version = (
        ModelVersion.objects.select_for_update(no_key=True).filter(pk=version_id).only("scoring").first()
    )
    state = version.scoring if version is not None else None
    if not state or state.get("run") != run or state.get("next") != index:
        return False
    state.update(next=index + 1, done=min(state["total"], state["done"] + scored))
    ModelVersion.objects.filter(pk=version_id).update(scoring=state)
    return True


def scoring_abandon(version: ModelVersion) -> None:
    """Drop the chunks of the version's unfinished scoring (superseded, or the version is no longer
    active): its stored chunk files are deleted and its state says it stopped."""
    state = ModelVersion.objects.only("scoring").get(pk=version.pk).scoring
    if state.get("run") and not state.get("finished_at"):
        chunks_delete(version, state["run"], chunk_count(state))
        ModelVersion.objects.filter(pk=version.pk, scoring__run=state["run"]).update(
            scoring={**state, "case_ids": [], "finished_at": timezone.now().isoformat(), "stopped": True}
        )


def scoring_finish(version_id: int, run: str) -> None:
    ModelVersion.objects.filter(pk=version_id, scoring__run=run).update(
        scoring=_finished(ModelVersion.objects.only("scoring").get(pk=version_id).scoring)
    )


def _finished(state: dict) -> dict:
    return {**state, "case_ids": [], "done": state["total"], "finished_at": timezone.now().isoformat()}
