"""Store what the sandboxed parse of one uploaded file produced (workers.ml.imaging.sandbox): pixels,
de-identified DICOM, reference masks and rows, in one transaction. On any failure nothing is left behind."""

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.core.files import File
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction

from annotations.models import (
    Annotation,
    AnnotationKind,
    Case,
    CaseSplit,
    DicomInstance,
    Image,
    ImportJob,
    Project,
    SourceKind,
)
from hitl.core import task_names
from hitl.core.audit import audit_record
from hitl.core.outbox import outbox_enqueue
from hitl.core.storage import bytes_save, delete_quietly, mask_to_png
from hitl.core.types import User
from workers.ml.imaging import DeidContext, IngestError, Limits


@dataclass
class ImportResult:
    images: list[Image] = field(default_factory=list)
    duplicates: list[dict] = field(default_factory=list)  # [{"existing_image_id": ...}]


def ingest_limits(*, max_voxels: int | None = None) -> Limits:
    return Limits(
        max_file_bytes=settings.HITL_MAX_UPLOAD_BYTES,
        max_uncompressed_bytes=settings.HITL_MAX_UNCOMPRESSED_BYTES,
        max_pixels=max(1, settings.HITL_INGEST_MAX_VOXELS if max_voxels is None else max_voxels),
        max_slice_pixels=settings.HITL_INGEST_MAX_SLICE_PIXELS,
    )


def deid_context(project: Project) -> DeidContext:
    return DeidContext(salt=bytes.fromhex(project.deid_salt), date_shift_days=project.date_shift_days)


def parsed_store(*, job: ImportJob, images: list[dict[str, Any]], out_dir: Path) -> ImportResult:
    """Store the images described by the sandbox's result (file names relative to `out_dir`).

    An image whose pixels the project already holds is reported as a duplicate, not stored. A DICOM
    instance UID the project already holds with other pixels is refused (duplicate_instance): a re-sent,
    altered instance must not silently become a second image of the same study.
    """
    result = ImportResult()
    written: list[str] = []
    try:
        with transaction.atomic():
            seen: dict[str, Image] = {}
            for item in images:
                existing = (
                    seen.get(item["content_hash"])
                    or job.project.images.filter(content_hash=item["content_hash"]).first()
                )
                if existing is not None:
                    result.duplicates.append({"existing_image_id": existing.pk})
                    continue
                image = _store_one(job=job, item=item, out_dir=out_dir, written=written)
                seen[item["content_hash"]] = image
                result.images.append(image)
            if result.images:
                _after_import(job, result)
    except IntegrityError:
        delete_quietly(written)
        raise IngestError(
            "duplicate_instance", "the image or one of its DICOM instance UIDs is already stored"
        ) from None
    except BaseException:
        delete_quietly(written)
        raise
    return result


def _after_import(job: ImportJob, result: ImportResult) -> None:
    ids = [i.pk for i in result.images]
    audit_record(
        actor=job.created_by,
        action="image.import",
        project=job.project,
        target=job,
        details={"image_ids": ids, "duplicates": len(result.duplicates)},
    )
    for image_id in ids:  # the same outbox as all follow-up work: sent after commit, swept if refused
        outbox_enqueue(task=task_names.IMAGE_ANALYSE, kwargs={"image_id": image_id})
    if job.split == CaseSplit.POOL:  # no-op once a model is active: scoring owns the queue then
        outbox_enqueue(task=task_names.QUEUE_COLD_START, kwargs={"project_id": job.project_id})


def _display_name(project: Project, source_kind: str) -> str:
    """Neutral and numbered: upload file names carry patient names and record numbers."""
    prefix = "series" if source_kind in (SourceKind.DICOM, SourceKind.DICOM_SERIES) else "image"
    return f"{prefix}-{project.images.count() + 1:04d}"


def _save_file(name: str, path: Path, written: list[str]) -> str:
    with path.open("rb") as fh:
        stored = default_storage.save(name, File(fh))  # streamed in chunks, never read whole
    written.append(stored)
    return stored


def _store_one(*, job: ImportJob, item: dict[str, Any], out_dir: Path, written: list[str]) -> Image:
    project = job.project
    prefix = f"projects/{project.pk}/images/{item['content_hash'][:16]}"
    uids = item["uids"] or {}
    sop_uids = uids.get("sop_instances") or []
    if sop_uids and DicomInstance.objects.filter(sop_instance_uid__in=sop_uids).exists():
        raise IngestError("duplicate_instance", "a DICOM instance UID of this series is already stored")
    image = Image.objects.create(
        project=project,
        display_name=_display_name(project, item["source_kind"]),
        source_kind=item["source_kind"],
        modality=item["modality"] if item["modality"] != "OT" else project.modality,  # NIfTI/PNG carry none
        pixels_path=_save_file(f"{prefix}/pixels.npy", out_dir / item["pixels"], written),
        shape=item["shape"],
        dtype=item["dtype"],
        spacing=item["spacing"],
        affine=item["affine"],
        window_presets=[{"name": n, "center": c, "width": w} for n, c, w in item["window_presets"]],
        content_hash=item["content_hash"],
        study_uid=uids.get("study") or "",
        series_uid=uids.get("series") or "",
        frame_of_reference_uid=uids.get("frame_of_reference") or "",
        created_by=job.created_by,
    )
    for index, rel in enumerate(item["dicom_files"]):
        path = _save_file(f"{prefix}/dicom/{index:05d}.dcm", out_dir / rel, written)
        sop = sop_uids[index] if index < len(sop_uids) else ""
        DicomInstance.objects.create(image=image, slice_index=index, sop_instance_uid=sop, path=path)
    cases = Case.objects.bulk_create(
        [Case(project=project, image=image, slice_index=i, split=job.split) for i in range(item["shape"][0])]
    )
    if item["mask"]:
        mask = np.load(out_dir / item["mask"], mmap_mode="r", allow_pickle=False)
        _store_reference_masks(cases=cases, mask=mask, user=job.created_by, prefix=prefix, written=written)
    return image


def _store_reference_masks(*, cases, mask: np.ndarray, user: User, prefix: str, written: list[str]) -> None:
    for case in cases:
        labels = np.asarray(mask[case.slice_index])
        png = mask_to_png(labels)
        path = bytes_save(f"{prefix}/masks/ref-{case.slice_index:05d}.png", png)
        written.append(path)
        values, counts = np.unique(labels, return_counts=True)
        ann = Annotation.objects.create(
            case=case,
            revision=1,
            kind=AnnotationKind.REFERENCE,
            author=user,
            mask_path=path,
            mask_sha256=hashlib.sha256(png).hexdigest(),
            label_counts={str(int(v)): int(c) for v, c in zip(values, counts, strict=True)},
        )
        case.current_annotation = ann
    Case.objects.bulk_update(cases, ["current_annotation"])
