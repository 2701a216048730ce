"""Why a queued batch item (training run, explanation report, export) has not started: no worker takes its
queue, or the workers that do are busy, and with what (progress and time left where known).

Which items hold up which queue is read off the live workers' heartbeats: a running report holds up a
training run only when a worker that takes `train` also takes `explain` (the run command's single batch
worker does; a deployment with a GPU training worker does not). Items of other projects are counted but not
named."""

from collections.abc import Iterable
from dataclasses import dataclass

from django.db.models import Model
from django.utils import timezone

from workers.models import (
    ExplanationReport,
    ExportJob,
    ExportStatus,
    ReportStatus,
    RunStatus,
    TrainingRun,
)
from workers.selectors.health import workers_alive

KINDS: dict[str, tuple[str, type[Model], str]] = {  # kind -> (queue, model, running status)
    "training run": ("train", TrainingRun, RunStatus.RUNNING),
    "explanation report": ("explain", ExplanationReport, ReportStatus.RUNNING),
    "export": ("export", ExportJob, ExportStatus.RUNNING),
}


@dataclass(frozen=True)
class Busy:
    kind: str
    item_id: int | None  # None: another project's
    progress: float
    eta_seconds: float | None

    def describe(self) -> str:
        name = (
            f"{self.kind} #{self.item_id}"
            if self.item_id is not None
            else f"a {self.kind} of another project"
        )
        left = f", about {_minutes(self.eta_seconds)} left" if self.eta_seconds is not None else ""
        return f"{name} ({self.progress:.0f} %{left})"


def _minutes(seconds: float) -> str:
    return f"{max(1, round(seconds / 60))} min" if seconds >= 60 else f"{max(1, round(seconds))} s"


def _eta(item) -> float | None:
    if isinstance(item, TrainingRun):
        return item.epochs[-1].get("eta_seconds") if item.epochs else None
    if not item.started_at or item.progress <= 0:
        return None
    elapsed = (timezone.now() - item.started_at).total_seconds()
    return elapsed * (100.0 - item.progress) / item.progress


def _running(kinds: Iterable[str], project_id: int, exclude: Model) -> list[Busy]:
    out = []
    for kind in kinds:
        _queue, model, running = KINDS[kind]
        for item in model.objects.filter(status=running).order_by("started_at", "id"):  # type: ignore[attr-defined]
            if item == exclude:
                continue
            own = item.project_id == project_id
            out.append(Busy(kind, item.pk if own else None, float(item.progress), _eta(item)))
    return out


def waiting_for(kind: str, item) -> str | None:
    """For a queued item of `kind` (a KINDS key): why it waits, in words; None when it is not queued."""
    queue, _model, _running_status = KINDS[kind]
    if item.status != "queued":
        return None
    takers = [w for w in workers_alive() if queue in (w.queues or [])]
    if not takers:
        return f"no worker takes the '{queue}' queue now: it starts when the batch worker runs again"
    shared = {q for w in takers for q in (w.queues or [])}
    busy = _running([k for k, (q, _m, _s) in KINDS.items() if q in shared], item.project_id, item)
    if not busy:
        return "waiting for a worker to pick it up"
    return "behind " + ", ".join(b.describe() for b in busy)
