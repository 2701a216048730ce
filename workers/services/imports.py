"""Import jobs: the web process checks an upload's headers, stages the files and answers at once; the
ingest worker parses each file in a sandboxed child (workers.ml.imaging.sandbox: hard memory and time
limits) and stores what it produced. Staged uploads still carry PHI: they are deleted as soon as their
file is done, whatever the outcome, and by the reaper when a job is abandoned."""

from __future__ import annotations

import logging
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files import File
from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone

from annotations.models import FINISHED_IMPORT, CaseSplit, Image, ImportJob, ImportStatus, Project
from hitl.core import task_names
from hitl.core.audit import audit_record
from hitl.core.errors import DomainError, StorageFull
from hitl.core.outbox import outbox_enqueue
from hitl.core.storage import delete_quietly
from hitl.core.types import User
from workers.ml.imaging.errors import INGEST_ERROR_STATUS, IngestError
from workers.ml.imaging.preflight import preflight
from workers.ml.imaging.sandbox import SandboxJob, SandboxLimits, SandboxOutcome, run_sandboxed
from workers.services.ingest import ImportResult, deid_context, ingest_limits, parsed_store

TASK = task_names.IMPORT_JOB_EXECUTE
log = logging.getLogger(__name__)


class UploadRefused(DomainError):
    """An upload refused by its headers, before anything was staged: the ingest error's code and status
    (413 too large, 409 a duplicate, 400 otherwise: listed under the `file` field)."""

    @classmethod
    def of(cls, err: IngestError) -> UploadRefused:
        status = INGEST_ERROR_STATUS.get(err.code, 400)
        return cls(err.code, str(err), status=status, field="file" if status == 400 else None)


def import_job_create(
    *,
    project: Project,
    user: User,
    files: list[File],
    mask: File | None = None,
    split: str,
    enqueue: bool = True,
) -> ImportJob:
    """Check each file's headers (`preflight`: raises UploadRefused, nothing staged), stage the files and
    create the job. `enqueue=False` leaves running it to the caller (the CLI runs it in-process)."""
    if split not in CaseSplit.values:
        raise ValidationError({"split": f"split must be one of {', '.join(CaseSplit.values)}"})
    if not 1 <= len(files) <= settings.HITL_IMPORT_MAX_FILES:
        raise ValidationError({"file": f"send 1 to {settings.HITL_IMPORT_MAX_FILES} files per upload"})
    if mask is not None and len(files) != 1:
        raise UploadRefused(
            "mask_shape_mismatch",
            "a mask can only accompany an upload holding one image",
            status=400,
            field="file",
        )
    limits = ingest_limits()
    for upload in [*files, *([mask] if mask is not None else [])]:
        try:
            preflight(upload, int(upload.size or 0), limits)
        except IngestError as err:
            raise UploadRefused.of(err) from err
    folder = f"imports/{uuid.uuid4().hex}"
    staged: list[str] = []
    try:
        entries = [_stage(f"{folder}/file-{i}", upload, staged) for i, upload in enumerate(files, start=1)]
        if mask is not None:
            entries[0]["mask_staged"] = _stage(f"{folder}/mask", mask, staged)["staged"]
        with transaction.atomic():
            job = ImportJob.objects.create(project=project, created_by=user, split=split, files=entries)
            audit_record(actor=user, action="import.create", project=project, target=job)
            if enqueue:
                outbox_enqueue(task=TASK, kwargs={"job_id": job.pk})
    except BaseException:
        delete_quietly(staged)
        raise
    return job


def _stage(name: str, upload: File, staged: list[str]) -> dict[str, Any]:
    upload.seek(0)
    stored = default_storage.save(name, upload)  # in chunks: a temporary upload file is never read whole
    staged.append(stored)
    return {"index": len(staged), "size": int(upload.size or 0), "staged": stored, "status": "queued"}


def import_job_execute(*, job_id: int) -> ImportJob | None:
    """Parse and store every file not done yet. Idempotent: a finished job, or one another worker is
    running now, is left alone; a job whose worker died resumes at its first unfinished file."""
    job = _start(job_id)
    if job is None:
        return None
    budget = settings.HITL_INGEST_MAX_VOXELS - _voxels_done(job)
    for entry in job.files:
        if entry["status"] in ("queued", "running"):
            budget -= _run_file(job, entry, budget)
    return _finish(job)


def _start(job_id: int) -> ImportJob | None:
    stale = timezone.now() - timedelta(seconds=settings.HITL_INGEST_TIMEOUT_SECONDS + 60)
    with transaction.atomic():
        job = (
            ImportJob.objects.select_for_update()
            .select_related("project", "created_by")
            .filter(pk=job_id)
            .first()
        )
        if job is None or job.finished or job.status == ImportStatus.RUNNING and job.updated_at > stale:
            return None
        job.status = ImportStatus.RUNNING
        job.started_at = job.started_at or timezone.now()
        job.save(update_fields=["status", "started_at", "updated_at"])
    return job


def _voxels_done(job: ImportJob) -> int:
    ids = [i for entry in job.files for i in entry.get("image_ids", [])]
    return sum(_voxels(shape) for shape in Image.objects.filter(pk__in=ids).values_list("shape", flat=True))


def _voxels(shape: list[int]) -> int:
    return int(shape[0]) * int(shape[1]) * int(shape[2]) if len(shape) >= 3 else 0


def _run_file(job: ImportJob, entry: dict[str, Any], budget: int) -> int:
    """Parse and store one file; record the outcome in `entry`. Returns the voxels it stored."""
    total = len(job.files)
    _progress(job, entry, status="running", message=f"parsing file {entry['index']} of {total}")
    voxels = 0
    try:
        with _local_copies(entry) as (upload, mask, work):
            outcome = _sandboxed(job, upload, mask, work, budget)
            result = parsed_store(job=job, images=outcome.images, out_dir=work / "out")
        voxels = sum(_voxels(image.shape) for image in result.images)
        entry.update(
            _imported(result), peak_rss_bytes=outcome.peak_rss_bytes, seconds=round(outcome.seconds, 3)
        )
    except IngestError as err:
        cost = {
            "peak_rss_bytes": getattr(err, "peak_rss_bytes", None),
            "seconds": getattr(err, "seconds", None),
        }
        entry.update(status="failed", error=_error(err), **cost)
    except StorageFull as exc:  # nothing of the file was kept (ingest deletes what it stored)
        entry.update(status="failed", error=_error(IngestError("storage_full", str(exc))))
    except Exception as exc:  # a bug or an outage must not leave the file "running" for ever
        log.error("import %s file %s failed: %s", job.pk, entry["index"], type(exc).__name__)
        entry.update(
            status="failed", error=_error(IngestError("ingest_failed", "the file could not be imported"))
        )
    finally:
        delete_quietly([p for p in (entry.get("staged"), entry.get("mask_staged")) if p])
        entry.update(staged="", mask_staged="")
        _progress(job, entry, status=entry["status"], message=f"file {entry['index']} of {total} done")
    return voxels


def _sandboxed(job: ImportJob, upload: Path, mask: Path | None, work: Path, budget: int) -> SandboxOutcome:
    if budget <= 0:
        raise IngestError("too_large", f"this upload exceeds {settings.HITL_INGEST_MAX_VOXELS} voxels in all")
    ctx = deid_context(job.project)
    spec = SandboxJob(
        upload=str(upload),
        out_dir=str(work / "out"),
        salt_hex=ctx.salt.hex(),
        date_shift_days=ctx.date_shift_days,
        limits=ingest_limits(max_voxels=budget),
        mask=str(mask) if mask else None,
        allowed_labels=sorted(job.project.label_values()),
    )
    timeout = settings.HITL_INGEST_TIMEOUT_SECONDS
    box = SandboxLimits(
        memory_bytes=settings.HITL_INGEST_MEMORY_BYTES,
        cpu_seconds=timeout,
        wall_seconds=float(timeout),
        output_bytes=settings.HITL_MAX_UNCOMPRESSED_BYTES + settings.HITL_MAX_UPLOAD_BYTES,
    )
    return run_sandboxed(spec, box)


@contextmanager
def _local_copies(entry: dict[str, Any]) -> Iterator[tuple[Path, Path | None, Path]]:
    """The staged file (and mask) as local paths for the child, in a private folder removed afterwards."""
    work = Path(tempfile.mkdtemp(prefix="hitl-ingest-"))
    try:
        upload = _fetch(entry["staged"], work / "upload")
        mask = _fetch(entry["mask_staged"], work / "mask") if entry.get("mask_staged") else None
        yield upload, mask, work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _fetch(name: str, target: Path) -> Path:
    if not name or not default_storage.exists(name):
        raise IngestError("ingest_failed", "the staged upload is gone (the import was abandoned)")
    with default_storage.open(name, "rb") as src, target.open("wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    return target


def _imported(result: ImportResult) -> dict[str, Any]:
    return {
        "status": "imported" if result.images else "duplicate",
        "image_ids": [i.pk for i in result.images],
        "duplicates": result.duplicates,
        "error": None,
    }


def _error(err: IngestError) -> dict[str, Any]:
    return {"code": err.code, "message": str(err), "status": INGEST_ERROR_STATUS.get(err.code, 400)}


def _progress(job: ImportJob, entry: dict[str, Any], *, status: str, message: str) -> None:
    entry["status"] = status
    done = sum(e["status"] not in ("queued", "running") for e in job.files)
    job.progress = min(99, int(100 * done / max(len(job.files), 1)))
    job.message = message
    job.save(update_fields=["files", "progress", "message", "updated_at"])


def _finish(job: ImportJob) -> ImportJob:
    outcomes = {e["status"] for e in job.files}
    if "failed" not in outcomes:
        job.status = ImportStatus.SUCCEEDED
    elif outcomes & {"imported", "duplicate"}:
        job.status = ImportStatus.PARTIAL
    else:
        job.status = ImportStatus.FAILED
    images = sum(len(e.get("image_ids", [])) for e in job.files)
    job.progress, job.finished_at = 100, timezone.now()
    job.message = f"{images} image(s) imported from {len(job.files)} file(s)"
    job.save(update_fields=["status", "progress", "finished_at", "message", "updated_at"])
    return job


def import_jobs_reap(*, queued_hours: int = 24) -> int:
    """Fail abandoned jobs and delete their staged uploads (PHI must not linger): running ones not updated
    for twice the per-file time limit (their worker died and no redelivery came), queued ones after
    `queued_hours` (no ingest worker took them). Returns how many were reaped."""
    now = timezone.now()
    running = now - timedelta(seconds=2 * settings.HITL_INGEST_TIMEOUT_SECONDS + 60)
    queued = now - timedelta(hours=queued_hours)
    jobs = ImportJob.objects.exclude(status__in=FINISHED_IMPORT).filter(updated_at__lt=running)
    reaped = 0
    for job in jobs:
        if job.status == ImportStatus.QUEUED and job.updated_at > queued:
            continue
        with transaction.atomic():
            _abandon(job)
        reaped += 1
    return reaped


def _abandon(job: ImportJob) -> None:
    for entry in job.files:
        delete_quietly([p for p in (entry.get("staged"), entry.get("mask_staged")) if p])
        entry.update(staged="", mask_staged="")
        if entry["status"] in ("queued", "running"):
            entry.update(
                status="failed", error=_error(IngestError("ingest_failed", "the import was abandoned"))
            )
    _finish(job)


def import_file_now(
    *, project: Project, user: User, path: Path, mask: Path | None = None, split: str = CaseSplit.POOL
) -> dict[str, Any]:
    """Import one local file (and mask) in this process, through the same header checks and sandboxed
    parse as an upload, without a worker (the CLI, the demo seeder, tests). Returns the job's file entry;
    a file refused by its headers raises UploadRefused (nothing staged)."""
    with ExitStack() as stack:
        files = [File(stack.enter_context(path.open("rb")))]
        mask_file = File(stack.enter_context(mask.open("rb"))) if mask is not None else None
        job = import_job_create(
            project=project, user=user, files=files, mask=mask_file, split=split, enqueue=False
        )
    return (import_job_execute(job_id=job.pk) or job).files[0]


def image_import(
    *, project: Project, user: User, data: bytes, mask_data: bytes | None = None, split: str = CaseSplit.POOL
) -> ImportResult:
    """`import_file_now` for bytes: raises the file's IngestError, returns what was stored."""
    with tempfile.TemporaryDirectory(prefix="hitl-import-") as tmp:
        path, mask = Path(tmp) / "upload", Path(tmp) / "mask"
        path.write_bytes(data)
        if mask_data is not None:
            mask.write_bytes(mask_data)
        try:
            entry = import_file_now(
                project=project,
                user=user,
                path=path,
                mask=mask if mask_data is not None else None,
                split=split,
            )
        except UploadRefused as err:
            raise IngestError(err.code, str(err)) from err
    if entry["status"] == "failed":
        raise IngestError(entry["error"]["code"], entry["error"]["message"])
    images = list(Image.objects.filter(pk__in=entry["image_ids"]).order_by("id"))
    return ImportResult(images=images, duplicates=entry["duplicates"])
