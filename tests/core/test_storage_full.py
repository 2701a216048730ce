"""Media storage full, on a real full filesystem (an 8 MiB tmpfs mounted as MEDIA_ROOT): a submission gets 507
`storage_full` and keeps its lease, an export fails with the reason; nothing is half-written, no part file is
left, and once space is freed the same work succeeds. Mounting needs root (the test command and CI run as
root); elsewhere the tests skip, but with CI=true they fail instead."""

import errno
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage

from annotations.models import Annotation, Assignment, AssignmentStatus, Role
from hitl.core.errors import StorageFull
from hitl.core.filesystem import AtomicFileSystemStorage
from hitl.core.storage import bytes_load, bytes_save
from tests.annotations.conftest import pool  # noqa: F401 (the queue tests' pool fixture)
from tests.annotations.test_queue import _mask, _submit
from tests.workers.test_export_helpers import blob_mask, import_nifti, revise
from workers.models import ExportJob, ExportStatus
from workers.services.exports.job import export_job_create, export_job_run

IN_CI = os.environ.get("CI", "").lower() == "true"
FILLER = ".filler"


@pytest.fixture
def media(tmp_path, settings):
    """An 8 MiB tmpfs as MEDIA_ROOT, unmounted at the end."""
    mnt = tmp_path / "media"
    mnt.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m,mode=0755", "tmpfs", str(mnt)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        reason = f"cannot mount a tmpfs here ({mounted.stderr.strip() or 'not root'})"
        pytest.fail(reason) if IN_CI else pytest.skip(reason)
    settings.MEDIA_ROOT = str(mnt)
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(root: Path, leave: int = 0) -> None:
    """Fill the filesystem, then free `leave` bytes (whole pages) again."""
    with open(root / FILLER, "ab", buffering=0) as fh:  # unbuffered: nothing left to flush on close
        try:
            while True:
                fh.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    if leave:
        size = (root / FILLER).stat().st_size
        os.truncate(root / FILLER, size - leave)


def free(root: Path) -> None:
    (root / FILLER).unlink()


def files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name != FILLER)


def test_a_write_that_does_not_fit_leaves_nothing_where_django_leaves_a_truncated_file(media):
    payload = np.random.default_rng(0).bytes(64 * 1024)
    fill(media, leave=8192)  # a write starts, then the disk fills up under it
    with pytest.raises(StorageFull) as err:
        bytes_save("masks/a.bin", payload)
    assert err.value.status == 507 and err.value.code == "storage_full"
    assert files(media) == []  # neither the real name nor the part file
    plain = FileSystemStorage(location=str(media))  # the behaviour this backend exists for
    with pytest.raises(OSError):
        plain.save("masks/b.bin", ContentFile(payload))
    truncated = media / "masks" / "b.bin"
    assert truncated.exists() and 0 < truncated.stat().st_size < len(payload)
    truncated.unlink()
    free(media)
    name = bytes_save("masks/a.bin", payload)
    assert name == "masks/a.bin" and bytes_load(name) == payload and files(media) == ["masks/a.bin"]


def test_a_taken_name_gets_a_fresh_one_and_the_first_file_is_untouched(media):
    storage = AtomicFileSystemStorage(location=str(media))
    first = storage.save("x/m.png", ContentFile(b"first"))
    second = storage._save("x/m.png", ContentFile(b"second"))  # a race: the name was free when picked
    assert first == "x/m.png" and second != first and second.startswith("x/m")
    assert (media / first).read_bytes() == b"first" and (media / second).read_bytes() == b"second"
    assert files(media) == sorted([first, second])


@pytest.mark.django_db
@pytest.mark.usefixtures("media", "pool")  # the tmpfs first, then the pool on it
def test_a_submission_on_a_full_disk_is_a_507_and_the_reader_keeps_the_case(
    media, project, member, client_for
):
    reader = member(Role.ANNOTATOR)
    client = client_for(reader)
    case_id = client.post(f"/api/v1/projects/{project.pk}/queue/claim").json()["case"]
    before = files(media)
    fill(media)
    resp = _submit(client, case_id, _mask())
    assert resp.status_code == 507
    assert (
        resp.json()["error"]["code"] == "storage_full"
        and "nothing was saved" in resp.json()["error"]["message"]
    )
    assert not Annotation.objects.filter(case_id=case_id).exists() and files(media) == before
    assert Assignment.objects.get(case_id=case_id, reader=reader).status == AssignmentStatus.ACTIVE
    free(media)
    resp = _submit(client, case_id, _mask())  # the same mask, once space is back
    assert resp.status_code == 201, resp.content
    ann = Annotation.objects.get(case_id=case_id)
    assert files(media) == sorted([*before, ann.mask_path])


@pytest.mark.django_db
def test_an_export_on_a_full_disk_fails_with_the_reason_and_leaves_no_zip(media, project, member):
    dm, reader = member(Role.DATA_MANAGER), member(Role.ANNOTATOR)
    image = import_nifti(project, dm)
    for z in range(3):
        revise(image.cases.get(slice_index=z), blob_mask(tuple(image.shape[1:3]), 1), reader)
    before = files(media)
    fill(media)
    job = export_job_create(project=project, requested_by=dm, formats=["png", "nifti"], enqueue=False)
    job = export_job_run(job_id=job.pk)
    assert job.status == ExportStatus.FAILED and not job.result_path
    assert "media storage is full" in job.error
    assert files(media) == before
    free(media)
    again = export_job_create(project=project, requested_by=dm, formats=["png", "nifti"], enqueue=False)
    again = export_job_run(job_id=again.pk)
    assert again.status == ExportStatus.SUCCEEDED and again.result_path
    assert ExportJob.objects.filter(status=ExportStatus.SUCCEEDED).count() == 1


@pytest.mark.django_db
def test_an_upload_on_a_full_disk_is_a_507_with_nothing_staged(media, project, dm_client):
    import nibabel as nib
    from django.core.files.uploadedfile import SimpleUploadedFile

    from annotations.models import ImportJob

    vol = np.random.default_rng(0).normal(size=(64, 64, 8)).astype(np.float32)
    data = nib.Nifti1Image(vol, np.eye(4)).to_bytes()
    fill(media, leave=8192)
    resp = dm_client.post(
        f"/api/v1/projects/{project.pk}/images",
        {"file": SimpleUploadedFile("v.nii", data)},
        format="multipart",
    )
    assert resp.status_code == 507 and resp.json()["error"]["code"] == "storage_full"
    assert files(media) == [] and not ImportJob.objects.exists()


@pytest.mark.django_db
def test_an_import_that_fills_the_disk_fails_as_storage_full_and_keeps_nothing(media, project, member):
    import nibabel as nib
    from django.core.files.uploadedfile import SimpleUploadedFile

    from annotations.models import Image, ImportStatus
    from workers.services.imports import import_job_create, import_job_execute

    vol = np.random.default_rng(0).normal(size=(64, 64, 8)).astype(np.float32)
    upload = SimpleUploadedFile("v.nii", nib.Nifti1Image(vol, np.eye(4)).to_bytes())
    job = import_job_create(
        project=project,
        user=member(Role.DATA_MANAGER),
        files=[upload],
        mask=None,
        split="pool",
        enqueue=False,
    )
    staged = files(media)
    assert len(staged) == 1
    fill(media, leave=8192)  # the staged upload fits; its parsed pixels do not
    job = import_job_execute(job_id=job.pk)
    assert job.status == ImportStatus.FAILED
    assert job.files[0]["error"]["code"] == "storage_full" and not Image.objects.exists()
    assert files(media) == []  # the staged upload is deleted too: the client uploads again
