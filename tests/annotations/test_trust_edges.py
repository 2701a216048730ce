"""Edges an attacker found: empty updates, expired exports, re-sent DICOM instances, unaudited lease events."""

import io

import nibabel as nib
import numpy as np
import pydicom
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone
from pydicom.data import get_testdata_file

from annotations.models import Case, Image, Role
from annotations.services.queue import assignment_flag, assignment_release, assignment_skip, case_claim_next
from hitl.core.models import AuditEvent
from tests.factories import MembershipFactory, UserFactory
from tests.helpers import upload_images
from tests.workers.test_export_helpers import blob_mask, import_nifti, revise
from workers.models import ExportJob
from workers.services.exports.job import export_job_create, export_job_run
from workers.services.queue_order import queue_priorities_set

pytestmark = pytest.mark.django_db


def test_an_empty_patch_is_refused_and_not_audited(project, member, client_for):
    for role in (Role.ANNOTATOR, Role.ADMIN):
        resp = client_for(member(role)).patch(f"/api/v1/projects/{project.pk}", {}, format="json")
        assert resp.status_code == 400, (role, resp.content)
    assert not AuditEvent.objects.filter(action="project.update").exists()


def test_an_export_past_its_expiry_is_gone_before_the_sweep_runs(project, member, client_for):
    dm, reader = member(Role.DATA_MANAGER), member(Role.ANNOTATOR)
    image = import_nifti(project, dm)
    revise(image.cases.get(slice_index=0), blob_mask(tuple(image.shape[1:3]), 1), reader)
    job = export_job_run(
        job_id=export_job_create(project=project, requested_by=dm, formats=["png"], enqueue=False).pk
    )
    client = client_for(dm)
    assert client.get(f"/api/v1/exports/{job.pk}/download").status_code == 200
    ExportJob.objects.filter(pk=job.pk).update(expires_at=timezone.now() - timezone.timedelta(seconds=1))
    resp = client.get(f"/api/v1/exports/{job.pk}/download")  # the hourly sweep has not run yet
    assert resp.status_code == 410 and resp.json()["error"]["code"] == "export_expired"


def _ct(pixel_delta: int = 0) -> bytes:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    if pixel_delta:
        arr = ds.pixel_array.copy()
        arr[0, 0] += pixel_delta
        ds.PixelData = arr.tobytes()
    buf = io.BytesIO()
    ds.save_as(buf)
    return buf.getvalue()


def test_a_resent_altered_instance_is_a_409_conflict_not_a_500(project, dm_client):
    upload_images(dm_client, project, {"file": SimpleUploadedFile("a.dcm", _ct())})
    job = upload_images(dm_client, project, {"file": SimpleUploadedFile("b.dcm", _ct(7))}, expect="failed")
    (entry,) = job["files"]
    assert entry["error"]["code"] == "duplicate_instance" and entry["error"]["status"] == 409
    assert Image.objects.count() == 1


def test_the_same_instance_in_another_project_is_its_own_image(project, other_project, client_for):
    """UIDs are remapped with each project's secret: the same file in two projects never collides."""
    for proj in (project, other_project):
        dm = UserFactory()
        MembershipFactory(project=proj, user=dm, role=Role.DATA_MANAGER)
        upload_images(client_for(dm), proj, {"file": SimpleUploadedFile("a.dcm", _ct())})
    assert (
        Image.objects.filter(project=project).count()
        == Image.objects.filter(project=other_project).count()
        == 1
    )


def test_claim_skip_flag_and_release_are_audited_with_ids_only(project, member, dm_client):
    vol = np.random.default_rng(0).normal(size=(4, 8, 8)).astype(np.float32)
    upload_images(
        dm_client, project, {"file": SimpleUploadedFile("v.nii", nib.Nifti1Image(vol, np.eye(4)).to_bytes())}
    )
    queue_priorities_set(project=project, entries=[])
    reader = member(Role.ANNOTATOR)
    actions = []
    for end, action in (
        (assignment_skip, "case.skip"),
        (assignment_flag, "case.flag"),
        (assignment_release, "case.release"),
    ):
        lease = case_claim_next(project=project, reader=reader)
        case = Case.objects.select_related("project").get(pk=lease.case_id)
        kwargs = {"reason": "PATIENT NAME VISIBLE"} if end is not assignment_release else {}
        end(case=case, reader=reader, **kwargs)
        actions += ["case.claim", action]
    events = list(AuditEvent.objects.filter(actor=reader).order_by("id"))
    assert [e.action for e in events] == actions
    assert all(e.project_id == project.pk and "case_id" in e.details for e in events)
    assert not any("PATIENT" in str(e.details) for e in events)  # reasons are free text: not in the trail
