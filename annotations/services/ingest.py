"""Import images into a project: parse + de-identify fully in memory (workers.ml.imaging), then store
pixels, de-identified DICOM and rows in one transaction. On any failure nothing is left behind."""

import hashlib
import logging
from dataclasses import dataclass, field

import numpy as np
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction

from annotations.models import Annotation, AnnotationKind, Case, CaseSplit, DicomInstance, Image, Project
from annotations.services.audit import audit_record
from annotations.storage import array_to_bytes, bytes_save, delete_quietly, mask_to_png
from workers.ml.imaging import DeidContext, IngestError, Limits, ParsedImage, parse_mask, parse_upload
from workers.services.outbox import outbox_enqueue

log = logging.getLogger(__name__)


@dataclass
class ImportResult:
    images: list[Image] = field(default_factory=list)
    duplicates: list[dict] = field(default_factory=list)  # [{"display_name", "existing_image_id"}]


def ingest_limits() -> Limits:
    return Limits(
        max_file_bytes=settings.HITL_MAX_UPLOAD_BYTES,
        max_uncompressed_bytes=settings.HITL_MAX_UNCOMPRESSED_BYTES,
    )


def deid_context(project: Project) -> DeidContext:
    return DeidContext(salt=bytes.fromhex(project.deid_salt), date_shift_days=project.date_shift_days)


def image_import(
    *,
    project: Project,
    user,
    data: bytes,
    filename: str,
    mask_data: bytes | None = None,
    mask_filename: str = "",
    split: str = CaseSplit.POOL,
) -> ImportResult:
    """Parse, de-identify and store one upload (a file or a zip). Raises IngestError (nothing stored)."""
    if split not in CaseSplit.values:
        raise ValidationError({"split": f"split must be one of {', '.join(CaseSplit.values)}"})
    parsed = parse_upload(data, filename, ctx=deid_context(project), limits=ingest_limits())
    masks: list[np.ndarray | None] = [None] * len(parsed)
    if mask_data is not None:
        if len(parsed) != 1:
            raise IngestError("mask_shape_mismatch", "a mask can only accompany an upload holding one image")
        masks[0] = parse_mask(
            mask_data,
            mask_filename or "mask",
            expected_shape=tuple(parsed[0].pixels.shape[:3]),
            allowed_labels=project.label_values() | {0},
            limits=ingest_limits(),
        )
    return _store(project=project, user=user, parsed=parsed, masks=masks, split=split)


def _store(*, project: Project, user, parsed: list[ParsedImage], masks: list, split: str) -> ImportResult:
    result = ImportResult()
    written: list[str] = []
    try:
        with transaction.atomic():
            seen: dict[str, Image] = {}
            for item, mask in zip(parsed, masks, strict=True):
                existing = (
                    seen.get(item.content_hash)
                    or project.images.filter(content_hash=item.content_hash).first()
                )
                if existing is not None:
                    result.duplicates.append(
                        {"display_name": item.display_name, "existing_image_id": existing.pk}
                    )
                    continue
                image = _store_one(
                    project=project, user=user, item=item, mask=mask, split=split, written=written
                )
                seen[item.content_hash] = image
                result.images.append(image)
            audit_record(
                actor=user,
                action="image.import",
                project=project,
                details={"image_ids": [i.pk for i in result.images], "duplicates": len(result.duplicates)},
            )
            ids = [i.pk for i in result.images]
            for image_id in ids:  # the same outbox as all follow-up work: sent after commit, swept if refused
                outbox_enqueue(task="workers.tasks.imaging.image_analyse", kwargs={"image_id": image_id})
            if ids and split == CaseSplit.POOL:  # no-op once a model is active: scoring owns the queue then
                outbox_enqueue(
                    task="workers.tasks.scoring.queue_cold_start_task", kwargs={"project_id": project.pk}
                )
    except BaseException:
        delete_quietly(written)
        raise
    return result


def _store_one(*, project, user, item: ParsedImage, mask, split: str, written: list[str]) -> Image:
    prefix = f"projects/{project.pk}/images/{item.content_hash[:16]}"
    pixels_path = bytes_save(f"{prefix}/pixels.npy", array_to_bytes(item.pixels))
    written.append(pixels_path)
    uids = item.uids
    image = Image.objects.create(
        project=project,
        display_name=item.display_name[:255],
        source_kind=item.source_kind,
        modality=item.modality if item.modality != "OT" else project.modality,  # NIfTI/PNG carry none
        pixels_path=pixels_path,
        shape=list(item.pixels.shape),
        dtype=str(item.pixels.dtype),
        spacing=[float(s) for s in item.spacing],
        affine=item.affine,
        window_presets=[
            {"name": n, "center": float(c), "width": float(w)} for n, c, w in item.window_presets
        ],
        content_hash=item.content_hash,
        study_uid=(uids.study if uids else None) or "",
        series_uid=(uids.series if uids else None) or "",
        frame_of_reference_uid=(uids.frame_of_reference if uids else None) or "",
        created_by=user,
    )
    for index, dicom_bytes in enumerate(item.dicom_files):
        sop_uid = uids.sop_instances[index] if uids else ""
        path = bytes_save(f"{prefix}/dicom/{index:05d}.dcm", dicom_bytes)
        written.append(path)
        DicomInstance.objects.create(image=image, slice_index=index, sop_instance_uid=sop_uid, path=path)
    cases = Case.objects.bulk_create(
        [Case(project=project, image=image, slice_index=i, split=split) for i in range(item.pixels.shape[0])]
    )
    if mask is not None:
        _store_reference_masks(image=image, cases=cases, mask=mask, user=user, prefix=prefix, written=written)
    return image


def _store_reference_masks(*, image, cases, mask: np.ndarray, user, prefix: str, written: list[str]) -> None:
    for case in cases:
        png = mask_to_png(mask[case.slice_index])
        path = bytes_save(f"{prefix}/masks/ref-{case.slice_index:05d}.png", png)
        written.append(path)
        values, counts = np.unique(mask[case.slice_index], return_counts=True)
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
