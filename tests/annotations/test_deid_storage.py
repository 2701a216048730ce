"""Importing pydicom's bundled files that carry patient names/IDs stores no PHI: every stored DICOM is read
back and checked against the Basic profile table."""

import logging
from pathlib import Path

import pydicom
import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from pydicom.data import get_testdata_file

from annotations.models import DicomInstance, Image
from tests.helpers import upload_images
from workers.ml.imaging.profile import BASIC_PROFILE_ACTIONS, MODIFIED_DATES_OPTION

PHI_FILES = ["CT_small.dcm", "MR_small.dcm"]


@pytest.mark.django_db
@pytest.mark.parametrize("name", PHI_FILES)
def test_stored_dicom_has_no_phi(dm_client, project, name, caplog):
    caplog.set_level(logging.DEBUG)
    path = Path(get_testdata_file(name))
    original = pydicom.dcmread(path)
    assert str(original.PatientName), "the test file must carry a patient name"
    upload_images(dm_client, project, {"file": SimpleUploadedFile(name, path.read_bytes())})
    image = Image.objects.get()
    assert image.study_uid and image.study_uid != original.StudyInstanceUID
    instances = list(DicomInstance.objects.filter(image=image))
    assert instances
    for inst in instances:
        raw = (Path(settings.MEDIA_ROOT) / inst.path).read_bytes()
        for secret in [
            str(original.PatientName),
            str(original.PatientID),
            original.StudyInstanceUID,
            original.SOPInstanceUID,
        ]:
            assert secret.encode() not in raw, f"identifying value found in stored {name}"
        stored = pydicom.dcmread(Path(settings.MEDIA_ROOT) / inst.path)
        for kw in (
            "InstitutionName",
            "ReferringPhysicianName",
            "StudyID",
            "AccessionNumber",
            "PatientBirthDate",
        ):
            if str(original.get(kw, "") or ""):
                assert str(stored.get(kw, "") or "") != str(original.get(kw)), f"{kw} kept"
        assert stored.PatientIdentityRemoved == "YES"
        codes = {item.CodeValue for item in stored.DeidentificationMethodCodeSequence}
        assert "113100" in codes
        assert not any(elem.tag.is_private for elem in stored.iterall())
        for tag, action in BASIC_PROFILE_ACTIONS.items():
            if tag not in original or tag in (0x00100010, 0x00100020):
                continue
            if tag in MODIFIED_DATES_OPTION:  # kept in modified form: dates shifted, times of day kept
                if original[tag].VR in ("DA", "DT") and original[tag].value:
                    assert stored[tag].value != original[tag].value, f"{tag} date not shifted"
                continue
            if action.startswith("X"):
                assert tag not in stored, f"{tag} should be removed ({action})"
            elif tag in stored and action in ("Z", "D") and stored[tag].VR not in ("SQ", "UI"):
                assert stored[tag].value != original[tag].value or not original[tag].value, (
                    f"{tag} kept ({action})"
                )
        assert inst.sop_instance_uid == stored.SOPInstanceUID != original.SOPInstanceUID
    assert str(original.PatientName) not in caplog.text and str(original.PatientID) not in caplog.text
