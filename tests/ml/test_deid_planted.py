"""Planted PHI: every attribute of the encoded Table E.1-1 (and free text outside it) planted in a real CT,
at the top level and inside sequence items, must not survive `parse_upload`; known answers per action code;
the quarantine of modalities that burn text into pixels."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta

import pydicom
import pytest
from pydicom.datadict import (
    DicomDictionary,
    dictionary_has_tag,
    dictionary_is_retired,
    dictionary_VR,
    get_entry,
)
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag, Tag

from workers.ml.imaging import DeidContext, IngestError, Limits, deidentify, parse_upload
from workers.ml.imaging.allowlist import ALLOWLIST
from workers.ml.imaging.profile import (
    APPLIED_ACTION,
    BASIC_PROFILE_ACTIONS,
    E11_REPEATING,
    E11_TABLE,
    MODIFIED_DATES_OPTION,
    keyword_tag,
)
from workers.ml.imaging.quarantine import QUARANTINED_MODALITIES
from workers.ml.models.device import limit_cpu_threads

limit_cpu_threads(1)

TEST_FILES = os.path.join(os.path.dirname(pydicom.__file__), "data", "test_files")
SHIFT = -100
CTX = DeidContext(salt=b"planted-phi-salt-0123456789abcdef", date_shift_days=SHIFT)
TEXT_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UT", "UR"})
BINARY_VRS = frozenset(
    {"AS", "AT", "DS", "FD", "FL", "IS", "OB", "OD", "OF", "OL", "OV", "OW", "SL", "SS", "SV"}
)
BINARY_VRS |= {"UL", "UN", "US", "UV"}
# Attributes outside the table the attacker found in storage; none is on the allowlist.
ATTACKER_FOUND = (
    "ClinicalTrialSubjectID",
    "ClinicalTrialSponsorName",
    "ClinicalTrialSiteName",
    "ContainerIdentifier",
    "ReasonForTheRequestedProcedure",
    "TextValue",
    "PatientTelecomInformation",
    "PatientBirthDateInAlternativeCalendar",
    "StorageMediaFileSetID",
    "UniqueDeviceIdentifier",
    "StationAETitle",
    "SmokingStatus",
)
# Where the nested copies go: a table sequence kept for its UIDs (X/Z/U*), one level deeper, and an
# allowlisted functional group sequence.
NESTED_PATHS = (
    ("ReferencedImageSequence",),
    ("ReferencedImageSequence", "SourceImageSequence"),
    ("SharedFunctionalGroupsSequence",),
)


def _raw(name: str) -> bytes:
    with open(os.path.join(TEST_FILES, name), "rb") as fh:
        return fh.read()


def _ct() -> Dataset:
    return pydicom.dcmread(os.path.join(TEST_FILES, "CT_small.dcm"))


def _bytes(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


@dataclass(frozen=True)
class Plant:
    """One planted element: where, what, and the bytes that must not appear in the output (if any)."""

    path: tuple[str, ...]
    tag: BaseTag
    vr: str
    value: object
    needle: bytes | None


class Planter:
    """Makes a distinctive value per planted element, valid for its VR, and records it."""

    def __init__(self) -> None:
        self.n = 0
        self.plants: list[Plant] = []

    def value(self, vr: str) -> tuple[object, bytes | None]:
        """(value, needle): text VRs carry a unique token, dates a date no other plant (shifted) meets."""
        self.n += 1
        token = f"PHI{self.n:05d}X"
        day = date(1903, 1, 1) + timedelta(days=3 * self.n)  # 3n - 100 is never 3m: no shifted collision
        uid = f"1.2.826.0.1.3680043.10.999.{1000 + self.n}"
        text = {"UR": f"https://example.org/{token}", "PN": f"{token}^GIVEN"}.get(vr, token)
        simple: dict[str, tuple[object, bytes | None]] = {
            "DA": (day.strftime("%Y%m%d"), day.strftime("%Y%m%d").encode()),
            "DT": (day.strftime("%Y%m%d") + "101010", day.strftime("%Y%m%d").encode()),
            "TM": (f"10{self.n % 60:02d}{self.n // 60 % 60:02d}.123456", None),
            "UI": (uid, uid.encode()),
        }
        if vr in simple:
            value, needle = simple[vr]
            return value, needle
        if vr in TEXT_VRS:
            return text, token.encode()
        return _binary_value(vr, self.n, token), None

    def plant(self, ds: Dataset, path: tuple[str, ...], tag: BaseTag, vr: str) -> None:
        if vr == "SQ":
            value: object = Sequence([self._item(path + (f"tag:{int(tag):08X}",))])
            needle = None
        else:
            value, needle = self.value(vr)
        ds.add(DataElement(tag, vr, value))
        self.plants.append(Plant(path, tag, vr, value, needle))

    def _item(self, path: tuple[str, ...]) -> Dataset:
        """A sequence item with a free-text token and an instance UID (both must go or change)."""
        item = Dataset()
        self.plant(item, path, keyword_tag("CodeMeaning"), "LO")
        self.plant(item, path, keyword_tag("ReferencedSOPInstanceUID"), "UI")
        return item


def _binary_value(vr: str, n: int, token: str) -> object:
    if vr in ("OB", "OD", "OF", "OL", "OV", "OW", "UN"):
        return (token + "-BINARY").encode()  # 16 bytes: a whole number of 2-, 4- and 8-byte words
    numbers: dict[str, object] = {
        "AS": f"{n % 900 + 100:03d}Y",
        "AT": Tag(0x00111000 + n),
        "DS": f"{7000 + n}.25",
        "IS": str(700000 + n),
        "FL": 7000.5 + n,
        "FD": 7000.25 + n,
    }
    return numbers.get(vr, 20000 + n)  # US, SS, UL, SL, UV, SV


def _first_vr(tag: BaseTag) -> str:
    """The dictionary VR; the first one where the dictionary offers a choice ("US or SS")."""
    return dictionary_VR(tag).split(" or ")[0]


def _table_tags(top: bool = False) -> list[BaseTag]:
    """Every Table E.1-1 row pydicom's dictionary knows (the others cannot be written with a VR); at the
    top level without the command (0000) and file meta (0002) elements, which pydicom refuses to write
    there (the file meta's own instance UID is planted in the file meta)."""
    return [tag for tag in E11_TABLE if dictionary_has_tag(tag) and not (top and tag.group in (0, 2))]


def _free_text_outside() -> list[BaseTag]:
    """Standard free-text attributes that are neither table rows nor allowlisted, plus the attacker's."""
    found = {keyword_tag(k) for k in ATTACKER_FOUND}
    for tag, entry in _dictionary():
        if entry[0] in ("LO", "LT", "SH", "ST", "UT", "UC") and tag.group not in (0x0000, 0x0002):
            found.add(tag)
    return sorted(t for t in found if t not in E11_TABLE and t not in ALLOWLIST)


def _dictionary() -> Iterator[tuple[BaseTag, tuple[str, ...]]]:
    for tag in DicomDictionary:
        if not dictionary_is_retired(tag):
            yield Tag(tag), get_entry(tag)


def _plant_all(ds: Dataset, planter: Planter, path: tuple[str, ...], tags: list[BaseTag]) -> None:
    for tag in tags:
        if tag in ds:
            del ds[tag]
        planter.plant(ds, path, tag, _first_vr(tag))


def _node(ds: Dataset, path: tuple[str, ...]) -> Dataset | None:
    """The first item at the end of `path` (keywords or "tag:<8 hex>"), or None when any step is gone."""
    node: Dataset | None = ds
    for step in path:
        tag = Tag(int(step[4:], 16)) if step.startswith("tag:") else keyword_tag(step)
        if node is None or tag not in node or node[tag].VR != "SQ" or not node[tag].value:
            return None
        node = node[tag].value[0]
    return node


def planted_dataset() -> tuple[Dataset, list[Plant]]:
    """CT_small with every known Table E.1-1 row and ~400 other free-text attributes planted at the top
    level and in the NESTED_PATHS items, each with a recognisable value; and the record of the plants."""
    ds, planter = _ct(), Planter()
    table, outside = _table_tags(), _free_text_outside()
    _plant_all(ds, planter, (), _table_tags(top=True) + outside)
    uid, needle = planter.value("UI")
    ds.file_meta.MediaStorageSOPInstanceUID = uid
    planter.plants.append(Plant((), keyword_tag("MediaStorageSOPInstanceUID"), "UI", uid, needle))
    for path in NESTED_PATHS:
        parent = _node(ds, path[:-1])
        assert parent is not None
        item = Dataset()
        item.ReferencedSOPClassUID = ds.SOPClassUID
        _plant_all(item, planter, path, table + outside)
        parent[keyword_tag(path[-1])] = DataElement(keyword_tag(path[-1]), "SQ", Sequence([item]))
    return ds, planter.plants


def planted_bytes() -> bytes:
    return _bytes(planted_dataset()[0])


@pytest.fixture(scope="module")
def planted() -> tuple[Dataset, list[Plant], bytes]:
    """(original, plants, de-identified Part 10 bytes from parse_upload)."""
    ds, plants = planted_dataset()
    (image,) = parse_upload(_bytes(ds), "planted.dcm", ctx=CTX, limits=Limits())
    return ds, plants, image.dicom_files[0]


def test_every_known_table_row_and_outside_text_is_planted(planted: tuple) -> None:
    _, plants, _ = planted
    top = {p.tag for p in plants if p.path == ()}
    assert set(_table_tags(top=True)) <= top and len(_table_tags()) >= 620
    assert {keyword_tag(k) for k in ATTACKER_FOUND} <= top
    assert len(_free_text_outside()) >= 390  # 395 with pydicom 3.0.2
    for path in NESTED_PATHS:
        assert set(_table_tags()) <= {p.tag for p in plants if p.path == path}


def test_no_planted_token_uid_or_date_in_output_bytes(planted: tuple) -> None:
    _, plants, data = planted
    needles = [p.needle for p in plants if p.needle is not None]
    assert len(needles) > 3000
    leaked = [n for n in needles if n in data]
    assert leaked == []


def test_planted_binary_and_numeric_values_removed_or_changed(planted: tuple) -> None:
    _, plants, data = planted
    out = pydicom.dcmread(io.BytesIO(data))
    checked = 0
    for plant in plants:
        if plant.vr not in BINARY_VRS:
            continue
        node = _node(out, plant.path)
        if node is not None and plant.tag in node:
            assert node[plant.tag].value != plant.value, f"{plant.tag} kept at {plant.path}"
        checked += 1
    assert checked >= 4 * 35


def test_planted_times_shifted_only_under_the_option(planted: tuple) -> None:
    """TM values survive only where the Modified Dates option keeps them (time of day is not shifted)."""
    _, plants, data = planted
    out = pydicom.dcmread(io.BytesIO(data))
    for plant in (p for p in plants if p.vr == "TM"):
        node = _node(out, plant.path)
        kept = node is not None and plant.tag in node and node[plant.tag].value == plant.value
        assert kept == (plant.tag in MODIFIED_DATES_OPTION), f"{plant.tag} at {plant.path}"


def _elements(ds: Dataset) -> Iterator[DataElement]:
    """Every element at every depth, except inside the method codes `deidentify` writes last."""
    for elem in ds:
        yield elem
        if elem.VR == "SQ" and elem.keyword != "DeidentificationMethodCodeSequence":
            for item in elem.value:
                yield from _elements(item)


def test_output_holds_only_table_and_allowlisted_attributes(planted: tuple) -> None:
    out = pydicom.dcmread(io.BytesIO(planted[2]))
    for elem in _elements(out):
        assert elem.tag in E11_TABLE or elem.tag in ALLOWLIST, f"{elem.tag} {elem.keyword} survived"
        if elem.tag in E11_TABLE and elem.tag not in MODIFIED_DATES_OPTION:
            assert BASIC_PROFILE_ACTIONS[elem.tag] != "X"
    assert set(out.file_meta.keys()) <= {0x00020000, 0x00020001, 0x00020002, 0x00020003, 0x00020010}.union(
        {0x00020012, 0x00020013}
    )


def test_nested_items_survive_where_kept_and_are_cleaned(planted: tuple) -> None:
    original, _, data = planted
    out = pydicom.dcmread(io.BytesIO(data))
    for path in NESTED_PATHS:
        node = _node(out, path)
        assert node is not None, f"{path} should be kept (U or allowlisted)"
        assert node.ReferencedSOPClassUID == original.SOPClassUID
        assert node.AccessionNumber == "" and node.PatientName == ""  # Z at depth too
        assert "SmokingStatus" not in node and "TextValue" not in node


# ------------------------------------------------------------------------- known answers per action


def _known() -> Dataset:
    ds = _ct()
    ds.SmokingStatus = "YES"  # X
    ds.ProtocolName = "PROTO BY DR WHO"  # X/D -> X
    ds.RequestedProcedureDescription = "CT FOR JANE"  # X/Z -> Z
    ds.ContrastBolusAgent = "IODINE FOR JANE"  # Z/D -> Z
    ds.InstitutionName = "ST JANE HOSPITAL"  # X/Z/D -> Z
    ds.IssuerOfTheContainerIdentifierSequence = Sequence([Dataset()])  # Z on a sequence
    ds.ClinicalTrialSubjectID = "SUBJ-0042"  # D, LO
    ds.VerifyingObserverName = "Doe^Jane"  # D, PN
    ds.ContentSequence = Sequence([Dataset()])  # D, SQ
    ds.ContentSequence[0].TextValue = "JANE DOE REPORT"
    ds.add_new(0x0040A121, "DA", "20010203")  # Date: D, DA
    ds.add_new(0x006A0003, "UI", "1.2.3.4.5.6.7")  # AnnotationGroupUID: D, UI
    ds.AcquisitionDateTime = "19970430112936.5+0100"  # under the option: shifted
    ref = Dataset()
    ref.ReferencedSOPClassUID = ds.SOPClassUID
    ref.ReferencedSOPInstanceUID = "1.2.3.4.5.6.8"
    ref.ReferencedFrameNumber = 1
    ref.PurposeOfReferenceCodeSequence = Sequence([Dataset()])
    ds.ReferencedImageSequence = Sequence([ref])  # X/Z/U* -> U
    ds.SoftwareVersions = "SITE-BUILD-7"  # neither table nor allowlist
    ds.TextValue = "JANE DOE"
    return ds


def test_known_answer_for_each_action_code() -> None:
    original = _known()
    out = deidentify(original, CTX)
    assert {"SmokingStatus", "ProtocolName", "SoftwareVersions", "TextValue"}.isdisjoint(out.dir())
    for keyword in (
        "RequestedProcedureDescription",
        "ContrastBolusAgent",
        "InstitutionName",
        "AccessionNumber",
    ):
        assert keyword in out and out[keyword].is_empty, keyword
    assert len(out.IssuerOfTheContainerIdentifierSequence) == 0
    assert out.ClinicalTrialSubjectID == "ANONYMIZED" and out.VerifyingObserverName == "ANONYMIZED"
    assert len(out.ContentSequence) == 0 and out[0x0040A121].is_empty
    assert out[0x006A0003].value == CTX.remap_uid("1.2.3.4.5.6.7")


def test_known_answer_uids_dates_and_allowlist() -> None:
    original = _known()
    out = deidentify(original, CTX)
    assert out.StudyInstanceUID == CTX.remap_uid(original.StudyInstanceUID)
    assert out.FrameOfReferenceUID == CTX.remap_uid(original.FrameOfReferenceUID)
    assert deidentify(original, CTX).SOPInstanceUID == out.SOPInstanceUID  # consistent
    (ref,) = out.ReferencedImageSequence
    assert ref.ReferencedSOPInstanceUID == CTX.remap_uid("1.2.3.4.5.6.8")
    assert ref.ReferencedSOPClassUID == original.SOPClassUID and ref.ReferencedFrameNumber == 1
    assert "PurposeOfReferenceCodeSequence" not in ref
    assert out.StudyDate == CTX.shift_date(original.StudyDate) == "20031011"
    assert out.AcquisitionDateTime == "19970120112936.5+0100"
    assert out.StudyTime == original.StudyTime  # a time of day is kept under the option
    for keyword in ("Rows", "Columns", "PixelSpacing", "ImageOrientationPatient", "ImagePositionPatient"):
        assert out[keyword].value == original[keyword].value, keyword
    for keyword in ("KVP", "Manufacturer", "ManufacturerModelName", "RescaleIntercept", "ConvolutionKernel"):
        assert out[keyword].value == original[keyword].value, keyword
    assert out.PixelData == original.PixelData


def test_command_and_meta_elements_in_a_dataset_are_removed() -> None:
    ds = _ct()
    ds.add_new(0x00001000, "UI", "1.2.3.4.5.6.9")  # Affected SOP Instance UID: X
    ds.add_new(0x00001001, "UI", "1.2.3.4.5.6.10")  # Requested SOP Instance UID: U, but not here
    ds.add_new(0x00020016, "AE", "SENDER")
    out = deidentify(ds, CTX)
    assert not any(int(t) >> 16 in (0x0000, 0x0002) for t in out.keys())


def test_resolution_rule_and_table_size() -> None:
    """The applied action is the most conservative choice valid for any Type; C is never applied."""
    assert APPLIED_ACTION == {
        "D": "D",
        "Z": "Z",
        "X": "X",
        "U": "U",
        "Z/D": "Z",
        "X/Z": "Z",
        "X/D": "X",
        "X/Z/D": "Z",
        "X/Z/U*": "U",
    }
    assert len(E11_TABLE) == 652 and len(E11_REPEATING) == 3
    assert all(BASIC_PROFILE_ACTIONS[t] == APPLIED_ACTION[c] for t, c in E11_TABLE.items())
    assert E11_TABLE[keyword_tag("ClinicalTrialSubjectID")] == "D"
    assert E11_TABLE[keyword_tag("ReferencedImageSequence")] == "X/Z/U*"
    assert E11_TABLE[Tag(0x00100012)] == "X"  # Name to Use: a raw tag, unknown to pydicom 3.0
    assert not MODIFIED_DATES_OPTION & {keyword_tag("PatientBirthDate"), keyword_tag("PatientBirthTime")}
    assert all(r.matches(0x60223000) for r in E11_REPEATING if r.name == "Overlay Data")


# ------------------------------------------------------------------------------------------- quarantine


def _with(ds: Dataset, **values: object) -> bytes:
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return _bytes(ds)


@pytest.mark.parametrize("modality", sorted(QUARANTINED_MODALITIES))
def test_quarantined_modality_refused_without_review(modality: str) -> None:
    ds = _ct()
    ds.PatientName = "Quarantine^Jane"
    with pytest.raises(IngestError) as err:
        parse_upload(_with(ds, Modality=modality), "Quarantine^Jane.dcm", ctx=CTX, limits=Limits())
    assert err.value.code == "burned_in_annotation"
    message = str(err.value)
    assert modality in message and "BurnedInAnnotation" in message and "NO" in message
    assert "Jane" not in message and "Quarantine" not in message and ds.StudyInstanceUID not in message
    (image,) = parse_upload(_with(ds, BurnedInAnnotation="NO"), "x.dcm", ctx=CTX, limits=Limits())
    assert pydicom.dcmread(io.BytesIO(image.dicom_files[0])).BurnedInAnnotation == "NO"


@pytest.mark.parametrize("name", ["SC_rgb_rle.dcm", "JPGExtended.dcm", "JPEG-lossy.dcm"])
def test_bundled_secondary_captures_refused_without_review(name: str) -> None:
    """SC_rgb_rle is Modality OT; the JPEG files are NM but of the Secondary Capture SOP class."""
    with pytest.raises(IngestError) as err:
        parse_upload(_raw(name), name, ctx=CTX, limits=Limits())
    assert err.value.code == "burned_in_annotation"
    assert "BurnedInAnnotation to NO" in str(err.value) and name not in str(err.value)


def test_reviewed_secondary_capture_imports_and_yes_is_always_refused() -> None:
    ds = pydicom.dcmread(os.path.join(TEST_FILES, "SC_rgb_rle.dcm"))
    (image,) = parse_upload(_with(ds, BurnedInAnnotation="NO"), "x.dcm", ctx=CTX, limits=Limits())
    assert image.pixels.shape[-1] == 3
    for modality in ("CT", "OT"):
        with pytest.raises(IngestError) as err:
            parse_upload(
                _with(_ct(), Modality=modality, BurnedInAnnotation="YES"), "x", ctx=CTX, limits=Limits()
            )
        assert err.value.code == "burned_in_annotation"
    with pytest.raises(IngestError):  # an unknown value is not a review
        deidentify(_quarantined("US", "MAYBE"), CTX)
    assert deidentify(_quarantined("US", " NO"), CTX).BurnedInAnnotation.strip() == "NO"


def _quarantined(modality: str, flag: str) -> Dataset:
    ds = _ct()
    ds.Modality, ds.BurnedInAnnotation = modality, flag
    return ds


def test_what_the_attacker_found_is_never_allowlisted() -> None:
    """The planted set leaves out allowlisted attributes; these twelve must never become one of them."""
    assert not {keyword_tag(k) for k in ATTACKER_FOUND} & ALLOWLIST
