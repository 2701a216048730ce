"""An export through the API, run by the real Celery worker on the "export" queue (PostgreSQL + Redis):
progress in our row, the zip on the storage backend, downloadable with checksums that match, and the
DICOM SEG referencing the de-identified source instances."""

import gzip
import hashlib
import io

import highdicom as hd
import nibabel as nib
import numpy as np
import pytest
from rest_framework.test import APIClient

from annotations.models import DicomInstance, Role
from hitl.core.storage import bytes_load, mask_from_png
from tests.factories import MembershipFactory, ProjectFactory, UserFactory
from tests.integration.conftest import wait_until
from tests.workers.test_export_helpers import blob_mask, checked_manifest, import_ct_series, read_zip, revise
from workers.ml.imaging.nifti import to_slices
from workers.models import ExportJob
from workers.services.exports.dicom_seg import label_values

pytestmark = pytest.mark.django_db(transaction=True)


def test_export_runs_on_the_export_queue_and_downloads(celery_worker):
    project = ProjectFactory()
    dm, reader = UserFactory(), UserFactory()
    MembershipFactory(project=project, user=dm, role=Role.DATA_MANAGER)
    MembershipFactory(project=project, user=reader, role=Role.ANNOTATOR)
    image = import_ct_series(project, dm, n=3)
    shape = tuple(image.shape[1:3])
    anns = [
        revise(case, blob_mask(shape, case.slice_index), reader)
        for case in image.cases.order_by("slice_index")
    ]
    client = APIClient()
    client.force_authenticate(dm)
    resp = client.post(
        f"/api/v1/projects/{project.pk}/exports",
        {"formats": ["dicom_seg", "nifti", "png", "coco", "csv"], "include_images": True},
        format="json",
    )
    assert resp.status_code == 201, resp.content
    assert resp.json()["status"] == "queued"  # not eager: the worker does it
    job_id = resp.json()["id"]
    job = wait_until(lambda: ExportJob.objects.filter(pk=job_id, status__in=["succeeded", "failed"]).first())
    assert job.status == "succeeded", job.error
    assert client.get(f"/api/v1/exports/{job_id}").json()["progress"] == 100.0
    dl = client.get(f"/api/v1/exports/{job_id}/download")
    data = b"".join(dl.streaming_content)
    assert dl.status_code == 200 and hashlib.sha256(data).hexdigest() == job.sha256
    members = read_zip(data)
    manifest = checked_manifest(members)
    assert manifest["revision_ids"] == [a.pk for a in anns]
    entries = {m["revision_id"]: m for m in manifest["masks"]}
    stored = {a.pk: mask_from_png(bytes_load(a.mask_path)) for a in anns}
    nifti = nib.Nifti1Image.from_bytes(
        gzip.decompress(members[entries[anns[0].pk]["files"]["nifti"]["path"]])
    )
    volume = to_slices(np.asanyarray(nifti.dataobj))
    seg = hd.seg.segread(io.BytesIO(members[entries[anns[0].pk]["files"]["dicom_seg"]["path"]]))
    uids = [
        DicomInstance.objects.get(image=image, slice_index=a.case.slice_index).sop_instance_uid for a in anns
    ]
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=uids, combine_segments=True, relabel=False
    )
    for k, ann in enumerate(anns):
        assert np.array_equal(volume[ann.case.slice_index], stored[ann.pk])
        assert np.array_equal(label_values(project)[pixels[k]], stored[ann.pk])
