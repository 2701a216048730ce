"""De-identification (PS3.15 Basic profile + Modified Dates option) on pydicom's bundled files with PHI."""

from __future__ import annotations

import copy
import hashlib
import hmac
import io
import os
import re
from datetime import date, timedelta

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from workers.ml.imaging import (
    BASIC_PROFILE_ACTIONS,
    MODIFIED_DATES_OPTION,
    DeidContext,
    IngestError,
    Limits,
    deidentify,
    parse_upload,
)
from workers.ml.imaging.profile import KEEP_UID_TAGS
from workers.ml.models.device import limit_cpu_threads

limit_cpu_threads(1)

TEST_FILES = os.path.join(os.path.dirname(pydicom.__file__), "data", "test_files")
SHIFT = -100
CTX = DeidContext(salt=b"project-one-salt-0123456789abcdef", date_shift_days=SHIFT)
OTHER = DeidContext(salt=b"project-two-salt-0123456789abcdef", date_shift_days=SHIFT)
# Bundled files with pixel data and identifying values (PatientName/ID, institution, physicians, UIDs);
# examples_overlay has an overlay plane, liver_1frame (SEG) references other instances in sequences.
PHI_IMAGES = (
    "CT_small.dcm",
    "MR_small.dcm",
    "examples_overlay.dcm",
    "SC_rgb_rle.dcm",
    "rtdose_1frame.dcm",
    "liver_1frame.dcm",
    "693_J2KI.dcm",
)
NAME_TAGS = (0x00100010, 0x00100020)  # set to the pseudonym, not emptied
# Quarantined (Modality OT, Secondary Capture class): imported as if a person had reviewed the pixels.
REVIEWED = {"SC_rgb_rle.dcm"}


def _raw(name: str) -> bytes:
    with open(os.path.join(TEST_FILES, name), "rb") as fh:
        return fh.read()


def _read(data: bytes) -> Dataset:
    return pydicom.dcmread(io.BytesIO(data))


def _reviewed(name: str) -> bytes:
    """The bundled file, with BurnedInAnnotation "NO" set on a copy when it is a quarantined one."""
    if name not in REVIEWED:
        return _raw(name)
    ds = _read(_raw(name))
    ds.BurnedInAnnotation = "NO"
    buf = io.BytesIO()
    ds.save_as(buf)
    return buf.getvalue()


def _nodes(ds: Dataset) -> list[Dataset]:
    """The dataset and every sequence item inside it, recursively."""
    out = [ds]
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value:
                out.extend(_nodes(item))
    return out


def _values(ds: Dataset, vr: str) -> list[str]:
    found = []
    for elem in ds.iterall():
        if elem.VR == vr and not elem.is_empty and not elem.tag.is_private:
            found.extend(str(v) for v in (elem.value if elem.VM > 1 else [elem.value]))
    return [v.strip() for v in found if str(v).strip()]


def _instance_uids(ds: Dataset) -> set[str]:
    uids = set()
    for elem in list(ds.iterall()) + list(getattr(ds, "file_meta", Dataset())):
        if elem.VR == "UI" and elem.tag not in KEEP_UID_TAGS and not elem.is_empty:
            for v in elem.value if elem.VM > 1 else [elem.value]:
                if str(v).strip() and not str(v).startswith("1.2.840.10008."):
                    uids.add(str(v).strip())
    return uids


def _retained_strings(ds: Dataset) -> set[str]:
    """Text values of attributes the profile keeps as they are (e.g. Manufacturer)."""
    return {
        str(e.value).strip()
        for e in ds.iterall()
        if e.tag not in BASIC_PROFILE_ACTIONS and e.VR in ("LO", "SH", "CS") and not e.tag.is_private
    }


@pytest.fixture(scope="module")
def outputs() -> dict[str, tuple[Dataset, bytes]]:
    """file name -> (original dataset, de-identified Part 10 bytes written by parse_upload)."""
    result = {}
    for name in PHI_IMAGES:
        images = parse_upload(_reviewed(name), name, ctx=CTX, limits=Limits())
        assert len(images) == 1 and len(images[0].dicom_files) == 1
        result[name] = (_read(_raw(name)), images[0].dicom_files[0])
    return result


@pytest.mark.parametrize("name", PHI_IMAGES)
def test_profile_actions_applied_everywhere(outputs: dict, name: str) -> None:
    original, data = outputs[name]
    out = _read(data)
    pseudonym = CTX.pseudonym(str(original.PatientID))
    assert out.PatientID == pseudonym
    assert str(out.PatientName) == f"{pseudonym}^" and out.PatientName.family_name == pseudonym
    for node in _nodes(out):
        for tag, action in BASIC_PROFILE_ACTIONS.items():
            if tag not in node or tag in MODIFIED_DATES_OPTION or (node is out and tag in NAME_TAGS):
                continue
            elem = node[tag]
            assert action != "X", f"{elem.keyword} should have been removed"
            if action == "Z":
                assert elem.is_empty, f"{elem.keyword} should be empty"
            elif action == "D":
                assert elem.is_empty or elem.value == "ANONYMIZED"
            elif action == "U" and elem.VR == "UI":
                assert re.fullmatch(r"2\.25\.(0|[1-9]\d*)", str(elem.value))


@pytest.mark.parametrize("name", PHI_IMAGES)
def test_no_private_tags_overlays_or_original_names(outputs: dict, name: str) -> None:
    original, data = outputs[name]
    out = _read(data)
    assert not any(e.tag.is_private for e in out.iterall())
    assert not any(0x6000 <= e.tag.group <= 0x601E or 0x5000 <= e.tag.group <= 0x501E for e in out.iterall())
    allowed_pn = {"", CTX.pseudonym(str(original.PatientID)) + "^", "ANONYMIZED"}
    assert set(_values(out, "PN")) <= allowed_pn
    for value in _values(original, "PN"):
        for part in (p for p in re.split(r"[\^=]", value) if len(p) >= 3):
            assert part.encode() not in data, "a person name part survived"
    retained = _retained_strings(original)
    for keyword in ("PatientID", "InstitutionName", "InstitutionAddress", "StationName", "AccessionNumber"):
        value = str(original.get(keyword, "") or "").strip()
        # MR_small's InstitutionName "TOSHIBA" is also part of its Manufacturer, which the profile keeps.
        if value and not any(value in kept for kept in retained):
            assert value.encode() not in data, f"{keyword} survived"


@pytest.mark.parametrize("name", PHI_IMAGES)
def test_no_original_uid_or_date_in_bytes(outputs: dict, name: str) -> None:
    original, data = outputs[name]
    uids = _instance_uids(original)
    assert uids, "the test file should carry instance UIDs"
    for uid in uids:
        assert uid.encode() not in data
    dates = set(_values(original, "DA")) | {v[:8] for v in _values(original, "DT")}
    for value in dates:
        assert value.encode() not in data, "an original date survived"


@pytest.mark.parametrize("name", PHI_IMAGES)
def test_dates_shifted_by_exactly_the_offset(outputs: dict, name: str) -> None:
    original, data = outputs[name]
    out = _read(data)
    checked = 0
    for elem in original:
        if elem.VR != "DA" or elem.is_empty or elem.tag == 0x00100030:  # birth date is emptied (Z)
            continue
        got = str(out[elem.tag].value)
        want = date(int(elem.value[:4]), int(elem.value[4:6]), int(elem.value[6:8])) + timedelta(days=SHIFT)
        assert got == want.strftime("%Y%m%d")
        checked += 1
    assert checked >= {"CT_small.dcm": 5, "MR_small.dcm": 2}.get(name, 0)  # dates counted in the files
    assert out.get("PatientBirthDate", "") == ""
    assert out.LongitudinalTemporalInformationModified == "MODIFIED"


@pytest.mark.parametrize("name", PHI_IMAGES)
def test_identity_removed_markers(outputs: dict, name: str) -> None:
    out = _read(outputs[name][1])
    assert out.PatientIdentityRemoved == "YES"
    codes = [(i.CodeValue, i.CodingSchemeDesignator) for i in out.DeidentificationMethodCodeSequence]
    assert codes == [("113100", "DCM"), ("113107", "DCM")]
    assert out.DeidentificationMethod
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID


def test_pixels_survive_deidentification(outputs: dict) -> None:
    original, data = outputs["CT_small.dcm"]
    np.testing.assert_array_equal(_read(data).pixel_array, original.pixel_array)


def test_uids_consistent_within_project_and_distinct_across() -> None:
    a = _read(_raw("CT_small.dcm"))
    b = copy.deepcopy(a)
    b.SOPInstanceUID = a.SOPInstanceUID + ".2"
    da, db = deidentify(a, CTX), deidentify(b, CTX)
    assert da.StudyInstanceUID == db.StudyInstanceUID != a.StudyInstanceUID
    assert da.SeriesInstanceUID == db.SeriesInstanceUID
    assert da.SOPInstanceUID != db.SOPInstanceUID
    other = deidentify(a, OTHER)
    assert other.StudyInstanceUID != da.StudyInstanceUID
    assert other.SOPInstanceUID != da.SOPInstanceUID
    assert other.PatientID != da.PatientID


def test_nested_uids_and_names_in_rtplan() -> None:
    """rtplan has no pixels (not an image) but deep sequences with PN, UIDs and dates."""
    original = _read(_raw("rtplan.dcm"))
    out = deidentify(original, CTX)
    buf = io.BytesIO()
    out.save_as(buf, enforce_file_format=True)
    data = buf.getvalue()
    for uid in _instance_uids(original):
        assert uid.encode() not in data
    assert set(_values(out, "PN")) <= {"", CTX.pseudonym(str(original.PatientID)) + "^", "ANONYMIZED"}
    assert b"Last^First" not in data and b"id00001" not in data
    assert original.PatientName == "Last^First^mid^pre", "the input must not be modified"


def test_burned_in_annotation_is_refused_without_phi_in_message() -> None:
    ds = _read(_raw("CT_small.dcm"))
    ds.BurnedInAnnotation = "YES"
    with pytest.raises(IngestError) as err:
        deidentify(ds, CTX)
    assert err.value.code == "burned_in_annotation"
    buf = io.BytesIO()
    ds.save_as(buf)
    with pytest.raises(IngestError) as err2:
        parse_upload(buf.getvalue(), "CompressedSamples^CT1.dcm", ctx=CTX, limits=Limits())
    assert err2.value.code == "burned_in_annotation"
    for text in ("CompressedSamples", "1CT1", str(ds.StudyInstanceUID)):
        assert text not in str(err2.value)


def test_remap_uid_known_answer_and_form() -> None:
    uid = "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322"
    digest = hmac.new(CTX.salt, b"uid\x00" + uid.encode(), hashlib.sha256).digest()
    expected = "2.25." + str(int.from_bytes(digest[:16], "big"))
    assert CTX.remap_uid(uid) == expected
    assert CTX.remap_uid(uid + "\x00") == expected  # DICOM pads odd-length UIDs with NUL
    assert len(expected) <= 64
    assert CTX.remap_uid(uid) != OTHER.remap_uid(uid)


def test_date_shift_known_answers() -> None:
    assert CTX.shift_date("20040119") == "20031011"  # 19 + 30 + 31 + 20 = 100 days back
    assert DeidContext(CTX.salt, 1).shift_date("20240228") == "20240229"  # leap year
    assert DeidContext(CTX.salt, 1).shift_datetime("20040119123000.5+0100") == "20040120123000.5+0100"
    assert CTX.shift_date("2004.01.19") == "20031011"  # ACR-NEMA form
    assert CTX.shift_date("2004") == "" and CTX.shift_datetime("2004") == ""  # cannot shift: dropped
    assert CTX.shift_date("20041301") == ""


def test_context_validation() -> None:
    with pytest.raises(ValueError):
        DeidContext(salt=b"short", date_shift_days=0)
    with pytest.raises(ValueError):
        DeidContext(salt=b"x" * 32, date_shift_days=1.5)  # type: ignore[arg-type]
