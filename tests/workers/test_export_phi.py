"""PHI: import pydicom's test files that carry patient names/IDs (and a series with planted values), export
everything (all formats, every revision, the images), and search every exported byte sequence, including
the decompressed .nii.gz members, for the original identifying values, UIDs and the readers' usernames."""

import gzip
import hashlib
import io
import zipfile
from pathlib import Path

import pydicom
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from pydicom.data import get_testdata_file

from annotations.models import Image, Role
from hitl.core.storage import bytes_load
from tests.helpers import upload_images
from tests.workers.test_export_helpers import blob_mask, checked_manifest, export_everything, read_zip, revise

pytestmark = pytest.mark.django_db

PLANTED_NAME = "Plantedsurname^Hermione"
PLANTED_ID = "PLANTED-ID-4711"
UID_KEYWORDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID")


def _planted_series() -> tuple[bytes, list[pydicom.Dataset]]:
    buf, originals = io.BytesIO(), []
    with zipfile.ZipFile(buf, "w") as zf:
        for i in range(3):
            ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
            ds.PatientName, ds.PatientID = PLANTED_NAME, PLANTED_ID
            ds.StudyInstanceUID = "1.2.826.0.1.3680043.99.1"
            ds.SeriesInstanceUID = "1.2.826.0.1.3680043.99.2"
            ds.SOPInstanceUID = f"1.2.826.0.1.3680043.99.3.{i + 1}"
            ds.ImagePositionPatient = [0.0, 0.0, float(i * 5)]
            ds.InstanceNumber = i + 1
            one = io.BytesIO()
            ds.save_as(one)
            zf.writestr(f"s{i}.dcm", one.getvalue())
            originals.append(ds)
    return buf.getvalue(), originals


def _secrets(datasets: list[pydicom.Dataset]) -> set[str]:
    out = set()
    for ds in datasets:
        out |= {str(ds.PatientName), str(ds.PatientID)}
        out |= {str(ds.get(k)) for k in UID_KEYWORDS if ds.get(k)}
    return {s for s in out if len(s) >= 4}


def _blobs(members: dict[str, bytes]) -> dict[str, bytes]:
    """Every member, and the decompressed content of the gzipped ones (NIfTI)."""
    out = dict(members)
    for name, data in members.items():
        if name.endswith(".gz"):
            out[name + "!decompressed"] = gzip.decompress(data)
    return out


def test_no_exported_byte_carries_phi_or_usernames(project, member, client_for):
    dm = member(Role.DATA_MANAGER, username="dm_phi_check")
    dm_client = client_for(dm)
    r1 = member(Role.ANNOTATOR, username="dr_alice_phi_check")
    r2 = member(Role.ANNOTATOR, username="dr_bob_phi_check")
    for user, email in ((r1, "alice.phi@hospital.example"), (r2, "bob.phi@hospital.example")):
        user.email = email
        user.save(update_fields=["email"])
    originals = []
    for name in ("CT_small.dcm", "MR_small.dcm"):
        path = Path(get_testdata_file(name))
        originals.append(pydicom.dcmread(path))
        assert str(originals[-1].PatientName), "the test file must carry a patient name"
        upload_images(dm_client, project, {"file": SimpleUploadedFile(name, path.read_bytes())})
    series, planted = _planted_series()
    originals += planted
    upload_images(dm_client, project, {"file": SimpleUploadedFile("Plantedsurname_series.zip", series)})
    assert Image.objects.filter(project=project).count() == 3
    for image in Image.objects.filter(project=project):
        for case in image.cases.all():
            shape = tuple(image.shape[1:3])
            revise(case, blob_mask(shape, case.pk), r1, time_spent_s=4.0)
            revise(case, blob_mask(shape, case.pk + 1), r2, time_spent_s=5.0)  # multi-read: agreement too
    job = export_everything(project, dm)
    raw = bytes_load(job.result_path)
    members = read_zip(raw)
    manifest = checked_manifest(members)
    assert any(n.startswith("masks/dicom_seg/") for n in members) and any("/dicom/" in n for n in members)
    assert all(m["agreement"] for m in manifest["masks"]), "every case was read twice"
    secrets = _secrets(originals) | {
        "dm_phi_check", "dr_alice_phi_check", "dr_bob_phi_check", "alice.phi@hospital.example",
        "bob.phi@hospital.example", "Plantedsurname",
    }  # fmt: skip
    assert PLANTED_NAME in secrets and PLANTED_ID in secrets
    blobs = _blobs(members) | {"<the zip itself>": raw}
    for secret in secrets:
        for name, data in blobs.items():
            assert secret.encode() not in data, f"an identifying value leaked into {name}"
    # the export is the exported de-identified data: its own UIDs are the project's pseudonymous ones
    seg_name = next(n for n in members if n.startswith("masks/dicom_seg/"))
    seg = pydicom.dcmread(io.BytesIO(members[seg_name]))
    assert seg.PatientIdentityRemoved == "YES" or str(seg.PatientName).startswith("ANON")
    assert hashlib.sha256(raw).hexdigest() == job.sha256
