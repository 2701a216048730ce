"""Upload API: happy paths store everything; every bad input gets a 4xx and leaves nothing behind.

An upload is answered 202 with an import job once its headers pass; the ingest task (run here by the
captured on_commit callbacks, as the worker would) parses it in a sandboxed child. A bad file is refused
either at once (4xx, from its headers) or by the job (its file entry carries the code and the 4xx it
stands for): `_outcome` gives both the same shape."""

import gzip
import io
import os
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import TestCase
from pydicom.data import get_testdata_file

from annotations.models import Annotation, Case, DicomInstance, Image, ImportJob
from hitl.core.models import AuditEvent
from tests.helpers import png_bytes, png_upload


def _media_files() -> list[Path]:
    root = Path(settings.MEDIA_ROOT)
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def _post(client, project, files: dict):
    """POST an upload and run the import job the way the worker would (after commit)."""
    with TestCase.captureOnCommitCallbacks(execute=True):
        return client.post(f"/api/v1/projects/{project.pk}/images", files, format="multipart")


def _upload(client, project, data: bytes, name: str, **extra):
    files = {"file": SimpleUploadedFile(name, data)}
    files.update(extra)
    return _post(client, project, files)


def _job(client, resp) -> dict:
    assert resp.status_code == 202, resp.content
    return client.get(f"/api/v1/imports/{resp.json()['id']}").json()


def _outcome(client, resp) -> tuple[int, str | None]:
    """(HTTP status, error code) of an upload, whether refused at once or by its import job."""
    if resp.status_code != 202:
        return resp.status_code, resp.json()["error"]["code"]
    (entry,) = _job(client, resp)["files"]
    return (entry["error"]["status"], entry["error"]["code"]) if entry["error"] else (201, None)


def _images(client, resp) -> list[dict]:
    return _job(client, resp)["images"]


def _zip(members: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _symlink_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        info = zipfile.ZipInfo("link.dcm")
        info.external_attr = 0o120777 << 16
        zf.writestr(info, "/etc/passwd")
    return buf.getvalue()


def _ct_bytes() -> bytes:
    return Path(get_testdata_file("CT_small.dcm")).read_bytes()


def _no_pixels_dicom() -> bytes:
    import pydicom

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    del ds.PixelData
    buf = io.BytesIO()
    ds.save_as(buf)
    return buf.getvalue()


def _nifti(shape=(8, 8, 3)) -> bytes:
    return nib.Nifti1Image(np.arange(np.prod(shape), dtype=np.float32).reshape(shape), np.eye(4)).to_bytes()


BAD_INPUTS = {
    "text file": (b"hello, this is not an image\n" * 10, "notes.png", "not_an_image"),
    "truncated dicom": (_ct_bytes()[:-5000], "trunc.dcm", "malformed_dicom"),
    "dicom without pixels": (_no_pixels_dicom(), "nopix.dcm", "no_pixel_data"),
    "path traversal zip": (_zip({"../evil.dcm": _ct_bytes()}), "series.zip", "unsafe_archive"),
    "absolute path zip": (_zip({"/tmp/evil.dcm": _ct_bytes()}), "series.zip", "unsafe_archive"),
    "symlink zip": (_symlink_zip(), "series.zip", "unsafe_archive"),
    "zip bomb": (_zip({"zeros.dcm": b"\0" * (50 * 1024 * 1024)}), "bomb.zip", None),
    # a valid header for 8x8x3 voxels, then 50 MB of zeros: inflating stops at what the header declares
    "gzip bomb nifti": (gzip.compress(_nifti() + b"\0" * (50 * 1024 * 1024)), "bomb.nii.gz", None),
    "gzip without a nifti": (gzip.compress(b"\0" * (50 * 1024 * 1024)), "zeros.nii.gz", "not_an_image"),
}


@pytest.mark.django_db
@pytest.mark.parametrize("label", list(BAD_INPUTS))
def test_bad_input_is_refused_and_nothing_stored(dm_client, project, label, settings):
    settings.HITL_MAX_UNCOMPRESSED_BYTES = 20 * 1024 * 1024
    data, name, code = BAD_INPUTS[label]
    before = _media_files()
    http, got = _outcome(dm_client, _upload(dm_client, project, data, name))
    assert 400 <= http < 500
    if code:
        assert got == code
    else:
        assert got in {"archive_too_large", "unsafe_archive", "too_large"}
    assert Image.objects.count() == 0 and Case.objects.count() == 0
    assert _media_files() == before
    assert not AuditEvent.objects.filter(action="image.import").exists()


@pytest.mark.django_db
def test_unsupported_transfer_syntax_is_refused(dm_client, project):
    # 12-bit JPEG Extended (1.2.840.10008.1.2.4.51): no decoder installed for it. A Secondary Capture, so
    # quarantined unless reviewed: BurnedInAnnotation NO on a copy, this test is about decoding.
    ds = pydicom.dcmread(get_testdata_file("JPEG-lossy.dcm"))
    ds.BurnedInAnnotation = "NO"
    buf = io.BytesIO()
    ds.save_as(buf)
    resp = _upload(dm_client, project, buf.getvalue(), "jpeg12.dcm")
    assert _outcome(dm_client, resp) == (400, "unsupported_transfer_syntax")
    assert Image.objects.count() == 0


@pytest.mark.django_db
def test_oversized_upload_gets_413(dm_client, project, settings):
    settings.HITL_MAX_UPLOAD_BYTES = 1000
    resp = dm_client.post(
        f"/api/v1/projects/{project.pk}/images", {"file": png_upload(shape=(64, 64))}, format="multipart"
    )
    assert resp.status_code == 413
    assert resp.json()["error"]["code"] == "too_large"
    assert Image.objects.count() == 0 and _media_files() == []


@pytest.mark.django_db
def test_an_oversized_file_stops_at_the_limit_on_its_way_to_disk(dm_client, project, settings, monkeypatch):
    """The guard stops receiving at the limit: the temporary upload file gets at most the limit (plus one
    chunk), not the whole body."""
    from django.core.files.uploadhandler import TemporaryFileUploadHandler

    written = []
    original = TemporaryFileUploadHandler.receive_data_chunk
    monkeypatch.setattr(
        TemporaryFileUploadHandler,
        "receive_data_chunk",
        lambda self, raw, start: written.append(len(raw)) or original(self, raw, start),
    )
    settings.HITL_MAX_UPLOAD_BYTES = 3 * 1024 * 1024  # over FILE_UPLOAD_MAX_MEMORY_SIZE: a temp file is used
    big = SimpleUploadedFile("big.nii", b"\0" * (40 * 1024 * 1024))
    resp = dm_client.post(f"/api/v1/projects/{project.pk}/images", {"file": big}, format="multipart")
    assert resp.status_code == 413 and resp.json()["error"]["code"] == "too_large"
    assert 0 < sum(written) <= settings.HITL_MAX_UPLOAD_BYTES  # 3 MB reached the disk, not 40
    assert not ImportJob.objects.exists() and _media_files() == []


@pytest.mark.django_db
def test_mask_shape_mismatch_and_bad_labels_refused(dm_client, project):
    image = png_upload(shape=(16, 16))
    mask = SimpleUploadedFile("m.png", png_bytes(np.zeros((8, 8), np.uint8)))
    resp = _post(dm_client, project, {"file": image, "mask": mask})
    assert _outcome(dm_client, resp) == (400, "mask_shape_mismatch")
    bad = np.zeros((16, 16), np.uint8)
    bad[2, 2] = 7  # project labels are 1 and 2
    resp = _post(
        dm_client,
        project,
        {"file": png_upload(shape=(16, 16)), "mask": SimpleUploadedFile("m.png", png_bytes(bad))},
    )
    assert _outcome(dm_client, resp) == (400, "mask_labels_invalid")
    assert Image.objects.count() == 0 and Annotation.objects.count() == 0 and _media_files() == []


@pytest.mark.django_db
def test_png_with_mask_creates_reference_revision(dm_client, project):
    mask = np.zeros((16, 16), np.uint8)
    mask[4:8, 4:8] = 1
    mask[10:12, 10:12] = 2
    files = {
        "file": png_upload(shape=(16, 16)),
        "mask": SimpleUploadedFile("m.png", png_bytes(mask)),
        "split": "validation",
    }
    resp = _post(dm_client, project, files)
    assert _outcome(dm_client, resp) == (201, None)
    case = Case.objects.get()
    assert case.split == "validation" and case.current_annotation.kind == "reference"
    assert case.current_annotation.label_counts == {"0": 236, "1": 16, "2": 4}
    from hitl.core.storage import mask_from_png

    stored = mask_from_png((Path(settings.MEDIA_ROOT) / case.current_annotation.mask_path).read_bytes())
    np.testing.assert_array_equal(stored, mask)


@pytest.mark.django_db
def test_duplicate_is_reported_not_stored_twice(dm_client, project):
    first = _post(dm_client, project, {"file": png_upload(seed=5)})
    (image,) = _images(dm_client, first)
    files_after_first = _media_files()
    again = _job(dm_client, _post(dm_client, project, {"file": png_upload(seed=5)}))
    assert again["status"] == "succeeded" and again["images"] == []
    assert again["files"][0]["status"] == "duplicate"
    assert again["files"][0]["duplicates"][0]["existing_image_id"] == image["id"]
    assert Image.objects.count() == 1 and _media_files() == files_after_first


@pytest.mark.django_db
def test_nifti_volume_becomes_one_case_per_slice(dm_client, project):
    resp = _upload(dm_client, project, _nifti((8, 8, 3)), "vol.nii")
    assert _outcome(dm_client, resp) == (201, None)
    image = Image.objects.get()
    assert image.source_kind == "nifti" and image.shape[0] == 3
    assert sorted(image.cases.values_list("slice_index", flat=True)) == [0, 1, 2]


@pytest.mark.django_db
def test_dicom_series_zip_keeps_grouping_and_instances(dm_client, project):
    import pydicom

    members = {}
    for i in range(4):
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        ds.ImagePositionPatient = [0.0, 0.0, float(i * 5)]
        ds.InstanceNumber = i + 1
        ds.SOPInstanceUID = f"1.2.3.4.{i + 1}"
        buf = io.BytesIO()
        ds.save_as(buf)
        members[f"s{3 - i}.dcm"] = buf.getvalue()
    resp = _upload(dm_client, project, _zip(members), "series.zip")
    assert _outcome(dm_client, resp) == (201, None)
    image = Image.objects.get()
    assert image.source_kind == "dicom_series" and image.shape[0] == 4
    assert DicomInstance.objects.filter(image=image).count() == 4
    assert (
        image.series_uid
        and image.series_uid != pydicom.dcmread(get_testdata_file("CT_small.dcm")).SeriesInstanceUID
    )
    assert os.path.getsize(Path(settings.MEDIA_ROOT) / image.pixels_path) > 0


@pytest.mark.django_db
def test_a_bare_dicom_dataset_passes_the_header_check_and_text_does_not(dm_client, project):
    """Without a preamble, only what can begin a DICOM dataset (group 0002 or 0008) goes to the parser."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_dataset(fp, pydicom.dcmread(get_testdata_file("CT_small.dcm")))
    assert _outcome(dm_client, _upload(dm_client, project, fp.getvalue(), "bare")) == (201, None)
    text = _upload(dm_client, project, b"PatientName: DOE^JOHN\n" * 20, "notes.dcm")
    assert text.status_code == 400 and text.json()["error"]["code"] == "not_an_image"  # at once: no job
    assert "DOE" not in text.json()["error"]["message"]
