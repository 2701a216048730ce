"""Exports: round trips (PNG, NIfTI with nibabel, DICOM SEG with highdicom, COCO RLE with our decoder),
provenance in the manifest, label policies and filters, job state (idempotent run, failure, expiry)."""

import gzip
import hashlib
import io
import json

import highdicom as hd
import nibabel as nib
import numpy as np
import pytest
from django.core.management import call_command
from django.utils import timezone

from annotations.models import AnnotationKind, CaseSplit, DicomInstance, Role
from hitl.core.models import AuditEvent
from hitl.core.storage import bytes_load, bytes_save, mask_from_png
from tests.workers.test_export_helpers import (
    NIFTI_AFFINE,
    blob_mask,
    checked_manifest,
    import_ct_series,
    import_nifti,
    read_zip,
    revise,
)
from workers.ml.agreement.metrics import case_agreement
from workers.ml.imaging.nifti import to_slices
from workers.models import ExportJob, ExportStatus, ModelVersion
from workers.services.exports.coco import coco_masks, coco_rle_decode, coco_rle_encode, label_rles
from workers.services.exports.common import reader_pseudonym
from workers.services.exports.dicom_seg import label_values
from workers.services.exports.job import export_job_create, export_job_run, export_jobs_expire

pytestmark = pytest.mark.django_db


def _export(
    client, project, django_capture_on_commit_callbacks, **body
) -> tuple[ExportJob, dict[str, bytes]]:
    """POST an export, run it (eager Celery, after commit), download and read the zip."""
    with django_capture_on_commit_callbacks(execute=True):
        resp = client.post(f"/api/v1/projects/{project.pk}/exports", body, format="json")
    assert resp.status_code == 201, resp.content
    job = ExportJob.objects.get(pk=resp.json()["id"])
    assert job.status == ExportStatus.SUCCEEDED, job.error
    detail = client.get(f"/api/v1/exports/{job.pk}").json()
    assert detail["progress"] == 100.0 and detail["download_url"]
    dl = client.get(detail["download_url"])
    assert dl.status_code == 200
    data = b"".join(dl.streaming_content)
    assert hashlib.sha256(data).hexdigest() == job.sha256 == dl["X-Content-SHA256"]
    assert len(data) == job.size_bytes
    return job, read_zip(data)


def _stored(ann) -> np.ndarray:
    return mask_from_png(bytes_load(ann.mask_path))


def test_rle_known_answer_and_round_trip():
    # column-major [0, 1, 1, 1]: one background pixel, then three foreground
    assert coco_rle_encode(np.array([[0, 1], [1, 1]], dtype=bool))["counts"] == [1, 3]
    assert coco_rle_encode(np.ones((2, 2), dtype=bool))["counts"] == [0, 4]
    assert coco_rle_encode(np.zeros((3, 2), dtype=bool)) == {"size": [3, 2], "counts": [6]}
    rng = np.random.default_rng(0)
    for shape in [(1, 1), (7, 5), (64, 33)]:
        binary = rng.random(shape) > 0.5
        assert np.array_equal(coco_rle_decode(coco_rle_encode(binary)), binary)
    with pytest.raises(ValueError):
        coco_rle_decode({"size": [2, 2], "counts": [1, 2]})


@pytest.mark.parametrize("seed", range(4))
def test_label_rles_match_the_per_label_encoder(seed):
    rng = np.random.default_rng(seed)
    shape = [(5, 4), (1, 9), (9, 1), (40, 37)][seed]
    mask = rng.choice([0, 1, 2, 7], size=shape, p=[0.4, 0.3, 0.2, 0.1]).astype(np.uint8)
    mask[0, 0], mask[-1, -1] = 2, 7  # runs touching the corners and wrapping columns
    rles = label_rles(mask)
    assert set(rles) == set(np.unique(mask).tolist()) - {0}
    for value, (rle, area, bbox) in rles.items():
        binary = mask == value
        rows, cols = np.flatnonzero(binary.any(axis=1)), np.flatnonzero(binary.any(axis=0))
        assert rle == coco_rle_encode(binary) and area == int(binary.sum())
        assert bbox == [cols[0], rows[0], cols[-1] - cols[0] + 1, rows[-1] - rows[0] + 1]


def test_nifti_png_coco_csv_round_trip_with_provenance(
    project, member, client_for, django_capture_on_commit_callbacks
):
    dm, reader = member(Role.DATA_MANAGER), member(Role.ANNOTATOR)
    image = import_nifti(project, dm)
    cases = list(image.cases.order_by("slice_index"))
    model = ModelVersion.objects.create(project=project, number=3, weights_path="w", weights_sha256="0" * 64)
    shape = tuple(image.shape[1:3])
    revise(cases[0], blob_mask(shape, 0), reader)  # superseded below: latest exports r2 only
    latest = [
        revise(
            cases[0],
            blob_mask(shape, 1),
            reader,
            time_spent_s=12.5,
            model=model,
            effort_dice=0.8,
            pixels_changed=7,
        ),
        revise(cases[2], blob_mask(shape, 2, labels=(2,)), reader, time_spent_s=3.0),
    ]
    job, members = _export(
        client_for(dm), project, django_capture_on_commit_callbacks, formats=["png", "nifti", "coco", "csv"]
    )
    manifest = checked_manifest(members)
    assert manifest["revision_ids"] == [a.pk for a in latest] == job.params["revision_ids"]
    entries = {m["revision_id"]: m for m in manifest["masks"]}
    first = entries[latest[0].pk]
    assert first["reader"] == reader_pseudonym(project, reader.pk) and first["reader"].startswith("reader-")
    assert first["proposal_model_version"] == {"id": model.pk, "number": 3}
    assert first["time_spent_s"] == 12.5
    assert first["correction_effort"] == {"dice": 0.8, "pixels_changed": 7}
    assert first["case_id"] == cases[0].pk and first["slice_index"] == 0 and first["agreement"] is None
    # PNG: byte-identical to the stored revisions
    for ann in latest:
        assert members[entries[ann.pk]["files"]["png"]] == bytes_load(ann.mask_path)
    # NIfTI: one volume for the image, the affine of the imported volume (RAS-canonical), masks exact
    (nifti_path,) = {e["files"]["nifti"]["path"] for e in entries.values()}
    nii = nib.Nifti1Image.from_bytes(gzip.decompress(members[nifti_path]))
    original = nib.as_closest_canonical(nib.Nifti1Image(np.zeros((6, 5, 3), np.int16), NIFTI_AFFINE))
    np.testing.assert_allclose(nii.affine, original.affine, atol=1e-6)
    slices = to_slices(np.asanyarray(nii.dataobj))
    assert slices.shape == tuple(image.shape)
    for ann in latest:
        assert np.array_equal(slices[entries[ann.pk]["files"]["nifti"]["slice_index"]], _stored(ann))
    assert not slices[1].any()  # the unlabelled slice holds 0 in the label volume, and its own mask says
    (read_path,) = {e["files"]["nifti"]["labelled_slices_path"] for e in entries.values()}
    assert read_path == nifti_path.replace(".nii.gz", "_labelled.nii.gz")
    read = nib.Nifti1Image.from_bytes(gzip.decompress(members[read_path]))
    np.testing.assert_allclose(read.affine, nii.affine, atol=0)
    read_slices = to_slices(np.asanyarray(read.dataobj))
    assert [bool(read_slices[k].all()) for k in range(3)] == [True, False, True]
    assert not read_slices[1].any()  # slice 1 was never labelled: unknown, not background
    # COCO: our RLE decoder rebuilds each label map exactly
    coco = json.loads(members["masks/coco.json"])
    assert [c["id"] for c in coco["categories"]] == [1, 2]
    decoded = coco_masks(coco)
    for ann in latest:
        assert np.array_equal(decoded[(ann.case_id, ann.pk)], _stored(ann))
    # CSV: one row per case with the correction effort
    rows = members["agreement.csv"].decode().splitlines()
    assert len(rows) == 3 and rows[0].startswith("case_id,")
    assert f"{latest[0].pk}," in rows[1] and ",0.8,7,3" in rows[1]
    assert AuditEvent.objects.filter(action="export.download", target_id=str(job.pk)).exists()


def test_dicom_seg_round_trip_references_source_instances(
    project, member, client_for, django_capture_on_commit_callbacks
):
    dm, reader = member(Role.DATA_MANAGER), member(Role.ANNOTATOR)
    image = import_ct_series(project, dm, n=4)
    cases = list(image.cases.order_by("slice_index"))
    shape = tuple(image.shape[1:3])
    anns = [revise(cases[i], blob_mask(shape, 10 + i), reader) for i in (0, 1, 3)]
    _, members = _export(
        client_for(dm), project, django_capture_on_commit_callbacks, formats=["dicom_seg", "nifti"]
    )
    manifest = checked_manifest(members)
    instances = {i.slice_index: i.sop_instance_uid for i in DicomInstance.objects.filter(image=image)}
    entries = {m["revision_id"]: m for m in manifest["masks"]}
    (seg_path,) = {e["files"]["dicom_seg"]["path"] for e in entries.values()}
    seg = hd.seg.segread(io.BytesIO(members[seg_path]))
    referenced = [
        r.ReferencedSOPInstanceUID for r in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence
    ]
    assert sorted(referenced) == sorted(instances[i] for i in (0, 1, 3))
    assert seg.StudyInstanceUID == image.study_uid and seg.FrameOfReferenceUID == image.frame_of_reference_uid
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == image.series_uid
    source_uids = [instances[a.case.slice_index] for a in anns]
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=source_uids, combine_segments=True, relabel=False
    )
    lut = label_values(project)
    for k, ann in enumerate(anns):
        assert entries[ann.pk]["sop_instance_uid"] == instances[ann.case.slice_index]
        assert np.array_equal(lut[pixels[k]], _stored(ann))
    # the NIfTI of a DICOM series carries the series geometry: voxel -> RAS = index affine composed
    (nifti_path,) = {e["files"]["nifti"]["path"] for e in entries.values()}
    nii = nib.Nifti1Image.from_bytes(gzip.decompress(members[nifti_path]))
    s, h, w = 3, 10, 20
    ny, nx = image.shape[1], image.shape[2]
    voxel = np.array([nx - 1 - w, ny - 1 - h, s, 1.0])
    np.testing.assert_allclose(
        nii.affine @ voxel, np.asarray(image.affine) @ np.array([s, h, w, 1.0]), atol=1e-4
    )
    assert np.array_equal(to_slices(np.asanyarray(nii.dataobj))[3], _stored(anns[2]))


def test_label_policies_filters_and_agreement(
    project, member, client_for, django_capture_on_commit_callbacks
):
    dm = member(Role.DATA_MANAGER)
    r1, r2 = member(Role.ANNOTATOR), member(Role.ANNOTATOR)
    image = import_nifti(project, dm)
    cases = list(image.cases.order_by("slice_index"))
    cases[2].split = CaseSplit.TEST
    cases[2].save(update_fields=["split"])
    shape = tuple(image.shape[1:3])
    a1 = revise(cases[0], blob_mask(shape, 1), r1)
    a2 = revise(cases[0], blob_mask(shape, 2), r2)
    a3 = revise(cases[0], blob_mask(shape, 3), r2)  # r2 revises: the 2nd layer of r2's volume
    cons = revise(cases[0], blob_mask(shape, 4), None, kind=AnnotationKind.CONSENSUS)
    t1 = revise(cases[2], blob_mask(shape, 5), r1)
    client = client_for(dm)

    job, members = _export(
        client, project, django_capture_on_commit_callbacks, formats=["nifti", "csv"], labels="all"
    )
    manifest = checked_manifest(members)
    assert manifest["revision_ids"] == [a1.pk, a2.pk, a3.pk, cons.pk, t1.pk]
    entries = {m["revision_id"]: m for m in manifest["masks"]}
    # every revision is in a volume of its own track and layer: never two revisions of one slice in one file
    paths = [(e["files"]["nifti"]["path"], e["slice_index"]) for e in entries.values()]
    assert len(set(paths)) == len(paths)
    p1, p2 = reader_pseudonym(project, r1.pk), reader_pseudonym(project, r2.pk)
    assert entries[a2.pk]["files"]["nifti"]["path"].endswith(f"{p2}.nii.gz")
    assert entries[a3.pk]["files"]["nifti"]["path"].endswith(f"{p2}_2.nii.gz")
    assert entries[cons.pk]["reader"] is None and entries[cons.pk]["kind"] == "consensus"
    # agreement: r1's and r2's latest revisions of case 0, numbers as the ML core computes them
    expected = case_agreement([_stored(a1), _stored(a3)], [1.5, 2.0])
    agreement = entries[a1.pk]["agreement"]
    assert agreement["revision_ids"] == [a1.pk, a3.pk] and agreement["readers"] == 2
    assert agreement["mean_pairwise_dice"] == pytest.approx(expected.mean_pairwise_dice, abs=1e-6)
    assert agreement["kappa"] == pytest.approx(expected.kappa, abs=1e-6)
    assert entries[t1.pk]["agreement"] is None
    csv_row = next(
        r for r in members["agreement.csv"].decode().splitlines() if r.startswith(f"{cases[0].pk},")
    )
    assert f"{expected.mean_pairwise_dice:.6f}"[:6] in csv_row and p1 in csv_row and p2 in csv_row

    job, _ = _export(client, project, django_capture_on_commit_callbacks, formats=["png"], labels="consensus")
    assert job.params["revision_ids"] == [cons.pk]
    job, _ = _export(
        client, project, django_capture_on_commit_callbacks, formats=["png"], reader_ids=[r1.pk], labels="all"
    )
    assert job.params["revision_ids"] == [a1.pk, t1.pk]
    job, _ = _export(client, project, django_capture_on_commit_callbacks, formats=["png"], split=["test"])
    assert job.params["revision_ids"] == [t1.pk]
    today = timezone.localdate().isoformat()
    resp = client.post(
        f"/api/v1/projects/{project.pk}/exports", {"formats": ["png"], "date_to": "2000-01-01"}, format="json"
    )
    assert (
        resp.status_code == 409 and resp.json()["error"]["code"] == "nothing_to_export"
    )  # valid, matches none
    reversed_range = {"formats": ["png"], "date_from": today, "date_to": "2000-01-01"}
    resp = client.post(f"/api/v1/projects/{project.pk}/exports", reversed_range, format="json")
    assert resp.status_code == 409 and "date_to is before date_from" in resp.json()["error"]["message"]
    resp = client.post(
        f"/api/v1/projects/{project.pk}/exports",
        {"formats": ["png"], "model_version_ids": [99999]},
        format="json",
    )
    assert resp.status_code == 404
    job, _ = _export(
        client, project, django_capture_on_commit_callbacks, formats=["png"], date_from=today, date_to=today
    )
    assert job.params["revision_ids"] == [cons.pk, t1.pk]  # the current pointers


def test_a_job_exports_the_revisions_frozen_at_creation(project, member):
    dm, reader = member(Role.DATA_MANAGER), member(Role.ANNOTATOR)
    image = import_nifti(project, dm)
    case = image.cases.get(slice_index=0)
    shape = tuple(image.shape[1:3])
    old = revise(case, blob_mask(shape, 1), reader)
    job = export_job_create(project=project, requested_by=dm, formats=["png"], enqueue=False)
    newer = revise(case, blob_mask(shape, 2), reader)  # arrives while the job waits in the queue
    job = export_job_run(job_id=job.pk)
    assert job.status == ExportStatus.SUCCEEDED
    members = read_zip(bytes_load(job.result_path))
    manifest = checked_manifest(members)
    assert manifest["revision_ids"] == [old.pk] and manifest["masks"][0]["revision_id"] != newer.pk
    assert export_job_run(job_id=job.pk) is None  # a second delivery does nothing


def test_an_export_whose_worker_died_is_queued_again_once_and_completes_once(project, member):
    from datetime import timedelta

    from django.utils import timezone

    from hitl.core.models import OutboxMessage
    from workers.services.exports.job import exports_reap

    dm, reader = member(Role.DATA_MANAGER), member(Role.ANNOTATOR)
    image = import_nifti(project, dm)
    revise(image.cases.get(slice_index=0), blob_mask(tuple(image.shape[1:3]), 1), reader)
    job = export_job_create(project=project, requested_by=dm, formats=["png"], enqueue=False)
    old = timezone.now() - timedelta(minutes=10)
    fresh = timezone.now()
    ExportJob.objects.filter(pk=job.pk).update(status=ExportStatus.RUNNING, attempts=1, heartbeat_at=fresh)
    assert exports_reap() == [] and export_job_run(job_id=job.pk) is None  # alive: left alone
    ExportJob.objects.filter(pk=job.pk).update(heartbeat_at=old)  # its worker was killed mid-zip
    assert exports_reap() == [job.pk]
    job.refresh_from_db()
    assert job.status == ExportStatus.QUEUED
    assert OutboxMessage.objects.filter(task="workers.tasks.export.export_job_run").count() == 1
    done = export_job_run(job_id=job.pk)  # the restarted worker
    assert done.status == ExportStatus.SUCCEEDED and done.attempts == 2 and done.result_path
    assert export_job_run(job_id=job.pk) is None  # the dead worker's message, redelivered: nothing
    assert ExportJob.objects.get(pk=job.pk).result_path == done.result_path
    ExportJob.objects.filter(pk=job.pk).update(status=ExportStatus.RUNNING, attempts=2, heartbeat_at=old)
    assert exports_reap() == [job.pk]  # lost twice: failed, with the reason
    job.refresh_from_db()
    assert job.status == ExportStatus.FAILED and "worker lost" in job.error


def test_corrupt_mask_fails_the_job_with_a_reason(project, member):
    dm, reader = member(Role.DATA_MANAGER), member(Role.ANNOTATOR)
    image = import_nifti(project, dm)
    ann = revise(image.cases.get(slice_index=0), blob_mask(tuple(image.shape[1:3]), 1), reader)
    job = export_job_create(project=project, requested_by=dm, formats=["png"], enqueue=False)
    from django.core.files.storage import default_storage

    default_storage.delete(ann.mask_path)
    bytes_save(ann.mask_path, b"\x89PNG not the same bytes")
    job = export_job_run(job_id=job.pk)
    assert job.status == ExportStatus.FAILED and "sha256" in job.error and not job.result_path


def test_expiry_deletes_the_zip_and_download_says_gone(
    project, member, client_for, django_capture_on_commit_callbacks
):
    dm, reader = member(Role.DATA_MANAGER), member(Role.ANNOTATOR)
    image = import_nifti(project, dm)
    revise(image.cases.get(slice_index=0), blob_mask(tuple(image.shape[1:3]), 1), reader)
    queued = export_job_create(project=project, requested_by=dm, formats=["png"], enqueue=False)
    client = client_for(dm)
    assert client.get(f"/api/v1/exports/{queued.pk}/download").status_code == 409
    job = export_job_run(job_id=queued.pk)
    from django.core.files.storage import default_storage

    assert default_storage.exists(job.result_path)
    assert export_jobs_expire(now=timezone.now()) == 0
    path = job.result_path
    with django_capture_on_commit_callbacks(execute=True):
        n = export_jobs_expire(now=job.expires_at + timezone.timedelta(seconds=1))
    assert n == 1 and export_jobs_expire(now=job.expires_at + timezone.timedelta(days=1)) == 0
    job.refresh_from_db()
    assert job.status == ExportStatus.EXPIRED and not default_storage.exists(path)
    resp = client.get(f"/api/v1/exports/{job.pk}/download")
    assert resp.status_code == 410 and resp.json()["error"]["code"] == "export_expired"


@pytest.mark.parametrize("role", [Role.ANNOTATOR, Role.ML_ENGINEER])
def test_annotators_and_ml_engineers_get_403(project, member, client_for, role):
    dm, reader = member(Role.DATA_MANAGER), member(Role.ANNOTATOR)
    image = import_nifti(project, dm)
    revise(image.cases.get(slice_index=0), blob_mask(tuple(image.shape[1:3]), 1), reader)
    job = export_job_run(
        job_id=export_job_create(project=project, requested_by=dm, formats=["png"], enqueue=False).pk
    )
    client = client_for(member(role))
    assert (
        client.post(f"/api/v1/projects/{project.pk}/exports", {"formats": ["png"]}, format="json").status_code
        == 403
    )
    assert client.get(f"/api/v1/projects/{project.pk}/exports").status_code == 403
    assert client.get(f"/api/v1/exports/{job.pk}").status_code == 403
    resp = client.get(f"/api/v1/exports/{job.pk}/download")
    assert resp.status_code == 403 and resp.json()["error"]["code"] == "permission_denied"


def test_outsiders_get_404_and_admins_may_export(project, other_project, member, client_for):
    from tests.factories import MembershipFactory, UserFactory

    dm, reader = member(Role.DATA_MANAGER), member(Role.ANNOTATOR)
    image = import_nifti(project, dm)
    revise(image.cases.get(slice_index=0), blob_mask(tuple(image.shape[1:3]), 1), reader)
    job = export_job_run(
        job_id=export_job_create(project=project, requested_by=dm, formats=["png"], enqueue=False).pk
    )
    outsider = UserFactory()
    MembershipFactory(project=other_project, user=outsider, role=Role.DATA_MANAGER)
    client = client_for(outsider)
    assert (
        client.post(f"/api/v1/projects/{project.pk}/exports", {"formats": ["png"]}, format="json").status_code
        == 404
    )
    assert client.get(f"/api/v1/projects/{project.pk}/exports").status_code == 404
    assert client.get(f"/api/v1/exports/{job.pk}").status_code == 404
    assert client.get(f"/api/v1/exports/{job.pk}/download").status_code == 404
    assert client.get("/api/v1/exports/999999").status_code == 404
    admin = client_for(member(Role.ADMIN))
    listed = admin.get(f"/api/v1/projects/{project.pk}/exports").json()
    assert [j["id"] for j in listed["results"]] == [job.pk] and "revision_ids" not in listed["results"][0][
        "params"
    ]
    assert admin.get(f"/api/v1/exports/{job.pk}/download").status_code == 200


def test_cli_exports_with_a_progress_bar(project, member, tmp_path, capsys):
    dm, reader = member(Role.DATA_MANAGER, username="cli_dm"), member(Role.ANNOTATOR)
    image = import_nifti(project, dm)
    ann = revise(image.cases.get(slice_index=1), blob_mask(tuple(image.shape[1:3]), 1), reader)
    out = tmp_path / "labels.zip"
    call_command(
        "export_labels", "--project", str(project.pk), "--user", "cli_dm", "--format", "png",
        "--format", "coco", "--include-images", "--output", str(out),
    )  # fmt: skip
    captured = capsys.readouterr()
    assert "1 masks" in captured.out and "100%" in captured.err
    manifest = checked_manifest(read_zip(out.read_bytes()))
    assert manifest["revision_ids"] == [ann.pk] and manifest["images"][0]["image_id"] == image.pk
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="does not allow"):
        call_command(
            "export_labels", "--project", str(project.pk), "--user", reader.username, "--format", "png"
        )
