"""Export jobs: create (validate, freeze the exact revisions, enqueue), run (build the zip on the storage
backend, with progress), expire (delete old zips), and record downloads."""

from __future__ import annotations

import datetime
import hashlib
import logging
import secrets
import tempfile
import time
from collections.abc import Callable
from functools import partial

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files import File
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import F, Max, Q
from django.http import Http404
from django.utils import timezone

from annotations.models import Annotation, CaseSplit, Project
from hitl.core import task_names
from hitl.core.audit import audit_record
from hitl.core.errors import ConflictError, DomainError
from hitl.core.outbox import outbox_enqueue
from hitl.core.storage import bytes_load, delete_quietly
from hitl.core.types import User
from workers.models import ExportFormat, ExportJob, ExportLabels, ExportStatus, ModelVersion
from workers.selectors.exports import export_revision_ids
from workers.services.exports.coco import write_coco
from workers.services.exports.common import Item, ZipOut, track_of
from workers.services.exports.csv import case_agreements, write_csv
from workers.services.exports.dicom_seg import write_dicom_seg
from workers.services.exports.images import write_images
from workers.services.exports.manifest import build_manifest, manifest_bytes, sha256sums
from workers.services.exports.nifti import write_nifti
from workers.services.exports.png import write_png
from workers.services.lost_jobs import MAX_ATTEMPTS, reap_lost, stale_running

log = logging.getLogger(__name__)

RUN_TASK = task_names.EXPORT_JOB_RUN
# A RUNNING job whose worker wrote no progress for this long lost its worker (killed, restarted): the reaper
# queues it again once (exports_reap), and a redelivered message may take it over (acks_late).
STALE_AFTER = datetime.timedelta(minutes=5)
ProgressFn = Callable[[int, int], None]


class ExportError(DomainError):
    """A job that cannot complete (e.g. a stored mask whose bytes no longer match its hash); the job fails
    with this message."""

    code = "export_failed"


def export_ttl() -> datetime.timedelta:
    return datetime.timedelta(days=settings.HITL_EXPORT_TTL_DAYS)


@transaction.atomic
def export_job_create(
    *,
    project: Project,
    requested_by: User,
    formats: list[str],
    labels: str = "latest",
    splits: list[str] | None = None,
    date_from: datetime.date | None = None,
    date_to: datetime.date | None = None,
    reader_ids: list[int] | None = None,
    model_version_ids: list[int] | None = None,
    include_images: bool = False,
    enqueue: bool = True,
) -> ExportJob:
    """Validate, freeze the revision ids the job will export, and (after commit) queue it. `enqueue=False`
    leaves running it to the caller (the CLI runs it in-process with a progress bar)."""
    formats = sorted(set(formats))
    if not formats or any(f not in ExportFormat.values for f in formats):
        raise ValidationError({"formats": f"choose one or more of {', '.join(ExportFormat.values)}"})
    if labels not in ExportLabels.values:
        raise ValidationError({"labels": f"labels must be one of {', '.join(ExportLabels.values)}"})
    if any(s not in CaseSplit.values for s in splits or []):
        raise ValidationError({"splits": f"splits must be among {', '.join(CaseSplit.values)}"})
    reversed_dates = bool(date_from and date_to and date_from > date_to)
    model_version_ids = sorted(set(model_version_ids or []))
    known = ModelVersion.objects.filter(project=project, pk__in=model_version_ids).count()
    if known != len(model_version_ids):
        raise Http404("unknown model version for this project")
    splits, reader_ids = sorted(set(splits or [])), sorted(set(reader_ids or []))
    revision_ids = export_revision_ids(
        project=project,
        labels=labels,
        splits=splits,
        date_from=date_from,
        date_to=date_to,
        reader_ids=reader_ids,
        model_version_ids=model_version_ids,
    )
    if not revision_ids or reversed_dates:
        why = " (date_to is before date_from)" if reversed_dates else ""
        raise ConflictError("nothing_to_export", f"no mask revision matches this request{why}")
    snapshot = Annotation.objects.aggregate(m=Max("pk"))["m"] or 0
    params = {
        "formats": formats,
        "labels": labels,
        "splits": splits,
        "reader_ids": reader_ids,
        "model_version_ids": model_version_ids,
        "date_from": date_from.isoformat() if date_from else None,
        "date_to": date_to.isoformat() if date_to else None,
        "include_images": bool(include_images),
        "snapshot_id": snapshot,
        "revision_ids": revision_ids,
    }
    job = ExportJob.objects.create(project=project, requested_by=requested_by, params=params)
    audit_record(
        actor=requested_by,
        action="export.create",
        project=project,
        target=job,
        details={**{k: v for k, v in params.items() if k != "revision_ids"}, "masks": len(revision_ids)},
    )
    if enqueue:
        outbox_enqueue(task=RUN_TASK, kwargs={"job_id": job.pk})
    return job


class _Progress:
    """Counts work units; writes progress to the row at most every 0.5 s, and calls the CLI's callback."""

    def __init__(self, job_id: int, total: int, callback: ProgressFn | None) -> None:
        self.job_id, self.total, self.done, self.callback = job_id, max(total, 1), 0, callback
        self._last = 0.0

    def __call__(self) -> None:
        self.done += 1
        if self.callback is not None:
            self.callback(self.done, self.total)
        now = time.monotonic()
        if now - self._last >= 0.5:
            self._last = now
            pct = min(99.0, 100.0 * self.done / self.total)
            ExportJob.objects.filter(pk=self.job_id).update(progress=pct, heartbeat_at=timezone.now())


def _claim(job_id: int) -> bool:
    """QUEUED (or a stale RUNNING one with an attempt left) -> RUNNING, one execution at a time."""
    now = timezone.now()
    takeover = stale_running(STALE_AFTER) & Q(attempts__lt=MAX_ATTEMPTS)
    return bool(
        ExportJob.objects.filter(Q(pk=job_id) & (Q(status=ExportStatus.QUEUED) | takeover)).update(
            status=ExportStatus.RUNNING,
            started_at=now,
            heartbeat_at=now,
            attempts=F("attempts") + 1,
            progress=0.0,
            error="",
        )
    )


def exports_reap() -> list[int]:
    """Exports whose worker died: queued again once, then failed (the zip is built in a temporary file and
    stored at the end, so nothing half-written remains). Returns their ids."""
    return reap_lost(ExportJob, stale_after=STALE_AFTER, task=RUN_TASK, kwarg="job_id", what="export")


def export_job_run(*, job_id: int, progress: ProgressFn | None = None) -> ExportJob | None:
    """Build and store the zip. Idempotent: does nothing (returns None) unless the job is QUEUED or a
    stale RUNNING one. Failures end the job FAILED with the reason; they are not raised."""
    if not _claim(job_id):
        return None
    job = ExportJob.objects.select_related("project").get(pk=job_id)
    try:
        _run(job, progress)
    except Exception as exc:  # includes SoftTimeLimitExceeded: the row must say why
        log.warning("export %s failed: %s", job_id, type(exc).__name__)
        ExportJob.objects.filter(pk=job_id).update(
            status=ExportStatus.FAILED,
            finished_at=timezone.now(),
            error=f"{type(exc).__name__}: {exc}"[:2000],
        )
    job.refresh_from_db()
    return job


def _load_items(job: ExportJob, tick) -> list[Item]:
    ids = job.params["revision_ids"]
    anns = list(
        Annotation.objects.filter(pk__in=ids)
        .select_related("case__image", "proposal_model_version")
        .order_by("case_id", "revision")
    )
    if len(anns) != len(ids):
        raise ExportError("some revisions of this export no longer exist")
    items = []
    for ann in anns:
        png = bytes_load(ann.mask_path)
        if hashlib.sha256(png).hexdigest() != ann.mask_sha256:
            raise ExportError(f"stored mask of revision {ann.pk} does not match its sha256")
        items.append(Item(ann=ann, png=png, track=track_of(ann, job.params["labels"], job.project)))
        tick()
    return items


def _write(job: ExportJob, fh, progress: ProgressFn | None) -> dict:
    params = job.params
    n = len(params["revision_ids"])
    tick = _Progress(
        job.pk, n * (1 + len(params["formats"])) + (n if params["include_images"] else 0), progress
    )
    out = ZipOut(fh)
    try:
        return _write_members(job, out, tick)
    finally:
        out.close()


def _write_members(job: ExportJob, out: ZipOut, tick: _Progress) -> dict:
    params, project = job.params, job.project
    formats = set(params["formats"])
    items = _load_items(job, tick)
    agreements = case_agreements(
        project=project, case_ids={i.ann.case_id for i in items}, snapshot_id=params["snapshot_id"]
    )
    notes: list[str] = []
    if ExportFormat.PNG in formats:
        write_png(out, items, tick)
    if ExportFormat.NIFTI in formats:
        write_nifti(out, items, tick)
    if ExportFormat.DICOM_SEG in formats:
        skipped = write_dicom_seg(out, project, items, tick)
        if skipped:
            notes.append(f"{skipped} masks have no DICOM source image: no DICOM SEG for them")
    if ExportFormat.COCO in formats:
        write_coco(out, project, items, tick)
    if ExportFormat.CSV in formats:
        write_csv(out, project, items, agreements, tick)
    images = write_images(out, items, tick) if params["include_images"] else []
    manifest = build_manifest(
        job=job, items=items, agreements=agreements, images=images, files=dict(out.files), notes=notes
    )
    out.add("manifest.json", manifest_bytes(manifest))
    out.add("SHA256SUMS", sha256sums(out.files))
    return {**manifest["counts"], "files": len(out.files)}


def _run(job: ExportJob, progress: ProgressFn | None) -> None:
    with tempfile.TemporaryFile() as fh:
        counts = _write(job, fh, progress)
        fh.seek(0)
        digest, size = hashlib.sha256(), 0
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
        fh.seek(0)
        name = f"exports/project-{job.project_id}/export-{job.pk}-{secrets.token_hex(8)}.zip"
        path = default_storage.save(name, File(fh, name=name))
    now = timezone.now()
    try:
        with transaction.atomic():
            ExportJob.objects.filter(pk=job.pk).update(
                status=ExportStatus.SUCCEEDED,
                progress=100.0,
                result_path=path,
                sha256=digest.hexdigest(),
                size_bytes=size,
                counts=counts,
                finished_at=now,
                expires_at=now + export_ttl(),
            )
            audit_record(
                actor=None,
                action="export.finish",
                project=job.project,
                target=job,
                details={"sha256": digest.hexdigest(), "bytes": size, **counts},
            )
    except BaseException:
        delete_quietly([path])
        raise


@transaction.atomic
def export_download_record(*, job: ExportJob, actor: User) -> None:
    """Data leaving the system is accountable: one audit row per download."""
    audit_record(actor=actor, action="export.download", project=job.project, target=job)


def export_jobs_expire(*, now: datetime.datetime | None = None) -> int:
    """Delete the zips of succeeded jobs past `expires_at` and mark them EXPIRED; returns how many."""
    now = now or timezone.now()
    expired = 0
    for job in ExportJob.objects.filter(status=ExportStatus.SUCCEEDED, expires_at__lte=now).select_related(
        "project"
    ):
        with transaction.atomic():
            path = job.result_path
            if not ExportJob.objects.filter(pk=job.pk, status=ExportStatus.SUCCEEDED).update(
                status=ExportStatus.EXPIRED, result_path=""
            ):
                continue  # another sweep took it
            audit_record(actor=None, action="export.expire", project=job.project, target=job)
            transaction.on_commit(partial(delete_quietly, [path]))
        expired += 1
    return expired
