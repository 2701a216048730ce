"""Builders shared by the export tests (no tests here): images imported through the real ingest service,
mask revisions stored through the real storage helpers, and reading an export zip back."""

import hashlib
import io
import json
import zipfile

import nibabel as nib
import numpy as np
import pydicom
from pydicom.data import get_testdata_file

from annotations.models import Annotation, AnnotationKind, Case
from hitl.core.storage import bytes_save, mask_to_png
from workers.services.imports import image_import

NIFTI_AFFINE = np.array(
    [[-2.0, 0.0, 0.0, 10.0], [0.0, 1.5, 0.0, -5.0], [0.0, 0.0, 3.0, 7.0], [0.0, 0.0, 0.0, 1.0]]
)


def revise(
    case: Case,
    mask: np.ndarray,
    user=None,
    *,
    kind: str = AnnotationKind.READER,
    time_spent_s: float = 0.0,
    model=None,
    effort_dice: float | None = None,
    pixels_changed: int | None = None,
) -> Annotation:
    """A new immutable revision of `case`, made current."""
    png = mask_to_png(mask)
    revision = case.annotations.count() + 1
    values, counts = np.unique(mask, return_counts=True)
    ann = Annotation.objects.create(
        case=case,
        revision=revision,
        kind=kind,
        author=user,
        mask_path=bytes_save(f"projects/{case.project_id}/masks/case-{case.pk}-r{revision}.png", png),
        mask_sha256=hashlib.sha256(png).hexdigest(),
        label_counts={str(int(v)): int(c) for v, c in zip(values, counts, strict=True)},
        time_spent_s=time_spent_s,
        proposal_model_version=model,
        effort_dice=effort_dice,
        pixels_changed=pixels_changed,
    )
    case.current_annotation = ann
    case.save(update_fields=["current_annotation"])
    return ann


def blob_mask(shape: tuple[int, int], seed: int, labels=(1, 2)) -> np.ndarray:
    """A label map with a disc per label (realistic runs, unlike noise)."""
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[:h, :w]
    mask = np.zeros(shape, dtype=np.uint8)
    for label in labels:
        cy, cx = rng.integers(h // 4, 3 * h // 4), rng.integers(w // 4, 3 * w // 4)
        r = rng.integers(max(2, min(h, w) // 10), max(3, min(h, w) // 4))
        mask[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = label
    return mask


def nifti_bytes(shape=(6, 5, 3)) -> bytes:
    data = np.arange(int(np.prod(shape)), dtype=np.int16).reshape(shape)
    return nib.Nifti1Image(data, NIFTI_AFFINE).to_bytes()


def import_nifti(project, user):
    return image_import(project=project, user=user, data=nifti_bytes()).images[0]


def ct_series_zip(n: int = 4) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i in range(n):
            ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
            ds.ImagePositionPatient = [0.0, 0.0, float(i * 5)]
            ds.InstanceNumber = i + 1
            ds.SOPInstanceUID = f"1.2.3.4.{i + 1}"
            one = io.BytesIO()
            ds.save_as(one)
            zf.writestr(f"s{i}.dcm", one.getvalue())
    return buf.getvalue()


def import_ct_series(project, user, n: int = 4):
    return image_import(project=project, user=user, data=ct_series_zip(n)).images[0]


def read_zip(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def checked_manifest(members: dict[str, bytes]) -> dict:
    """The manifest, after checking every member against it and against SHA256SUMS."""
    manifest = json.loads(members["manifest.json"])
    for name, meta in manifest["files"].items():
        assert hashlib.sha256(members[name]).hexdigest() == meta["sha256"], name
    sums = dict(line.split("  ")[::-1] for line in members["SHA256SUMS"].decode().splitlines())
    assert set(sums) == set(members) - {"SHA256SUMS"}
    for name, digest in sums.items():
        assert hashlib.sha256(members[name]).hexdigest() == digest, name
    return manifest


def export_everything(project, requested_by):
    """Every format, every revision of every reader, with the images: the finished ExportJob."""
    from workers.models import ExportStatus
    from workers.services.exports.job import export_job_create, export_job_run

    job = export_job_create(
        project=project,
        requested_by=requested_by,
        formats=["nifti", "dicom_seg", "png", "coco", "csv"],
        labels="all",
        include_images=True,
        enqueue=False,
    )
    job = export_job_run(job_id=job.pk)
    assert job.status == ExportStatus.SUCCEEDED, job.error
    return job
