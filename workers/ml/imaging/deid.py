"""De-identification of DICOM datasets by allowlist: PS3.15 Annex E Basic profile + Modified Dates option.

Every element, at every depth of every sequence, meets one rule in this order:

1. private tags, overlay (60xx) and curve (50xx) groups, command (0000) and file meta (0002) elements
   misplaced in the dataset, and elements whose value representation is unknown (UN, content cannot be
   checked) are removed;
2. a date/time of the Modified Dates option (`profile.MODIFIED_DATES_OPTION`) is kept, shifted;
3. a row of Table E.1-1 (`profile.BASIC_PROFILE_ACTIONS`, the whole table) gets its action: X removed,
   Z emptied, D a dummy, U kept with its UIDs remapped;
4. an attribute on the allowlist (`allowlist.ALLOWLIST`) is kept;
5. anything else is removed.

What is kept then meets the rules for whole value representations: every instance UID remapped, every
person name (PN) emptied, every date (DA, DT) shifted. Kept sequences have their items cleaned by the same
rules. The file meta keeps only what a Part 10 file needs (`_META_KEEP`).

Images are refused before any of this (`check_pixels_reviewed`) when they declare burned-in annotation, or
come from a modality that commonly burns text into pixels (quarantine) without declaring that they do not.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import date, timedelta

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag

from workers.ml.imaging.allowlist import ALLOWLIST
from workers.ml.imaging.profile import BASIC_PROFILE_ACTIONS, KEEP_UID_TAGS, MODIFIED_DATES_OPTION
from workers.ml.imaging.quarantine import check_pixels_reviewed

MIN_SALT_BYTES = 16
_DT_RE = re.compile(r"^(\d{8})(\d{0,6}(?:\.\d{1,6})?)([+-]\d{4})?$")
_DUMMY_TEXT = "ANONYMIZED"  # the D dummy for text VRs (fits every one of them, SH and AE included)
_DUMMY_TEXT_VRS = frozenset({"PN", "LO", "SH", "LT", "ST", "UT", "AE"})
_METHOD = [
    "DICOM PS3.15 E.1 Basic Application Level Confidentiality Profile",
    "Retain Longitudinal Temporal Information Modified Dates Option",
    "hitl-seg ingest",
]
_METHOD_CODES = (
    ("113100", "Basic Application Confidentiality Profile"),
    ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
)
# File meta kept: version, SOP class/instance, transfer syntax, implementation. Dropped: the sending,
# receiving and source AE titles and private information; group length is recomputed on write.
_META_KEEP = frozenset({0x00020001, 0x00020002, 0x00020003, 0x00020010, 0x00020012, 0x00020013})


@dataclass(frozen=True)
class DeidContext:
    """Per-project de-identification secrets.

    salt: secret random bytes (>= 16; use 32 from `secrets.token_bytes`), fixed for the project's life.
        UIDs and pseudonyms are keyed hashes of it, so the same original value maps to the same output
        within a project (longitudinal linkage survives) and to unrelated outputs across projects.
    date_shift_days: added to every date; fixed for the project so intervals between studies are kept.
    """

    salt: bytes
    date_shift_days: int

    def __post_init__(self) -> None:
        if not isinstance(self.salt, bytes) or len(self.salt) < MIN_SALT_BYTES:
            raise ValueError(f"DeidContext.salt must be at least {MIN_SALT_BYTES} bytes")
        if not isinstance(self.date_shift_days, int) or isinstance(self.date_shift_days, bool):
            raise ValueError("DeidContext.date_shift_days must be an int")

    def _digest(self, purpose: bytes, value: str) -> bytes:
        return hmac.new(self.salt, purpose + b"\x00" + value.encode("utf-8"), hashlib.sha256).digest()

    def remap_uid(self, uid: str) -> str:
        """ "2.25.<128-bit keyed hash as decimal>" (PS3.5 B.2 UUID-derived form; at most 44 chars)."""
        return "2.25." + str(int.from_bytes(self._digest(b"uid", _clean_uid(uid))[:16], "big"))

    def pseudonym(self, patient_id: str) -> str:
        """Stable per-project pseudonym "ANON-<16 hex>"; all patients without an ID share one."""
        return "ANON-" + self._digest(b"patient", patient_id.strip()).hex()[:16].upper()

    def shift_date(self, value: str) -> str:
        """Shift a DA value ("YYYYMMDD", or legacy "YYYY.MM.DD"); "" when it is not a full valid date."""
        text = value.strip().replace(".", "") if len(value.strip()) == 10 else value.strip()
        if len(text) != 8 or not text.isdigit():
            return ""
        try:
            shifted = date(int(text[:4]), int(text[4:6]), int(text[6:])) + timedelta(
                days=self.date_shift_days
            )
        except (ValueError, OverflowError):
            return ""
        return f"{shifted.year:04d}{shifted.month:02d}{shifted.day:02d}"

    def shift_datetime(self, value: str) -> str:
        """Shift the date part of a DT value; "" when it has no full date (a year alone cannot be shifted)."""
        match = _DT_RE.match(value.strip())
        if match is None:
            return ""
        day = self.shift_date(match.group(1))
        return day + match.group(2) + (match.group(3) or "") if day else ""


def _clean_uid(uid: str) -> str:
    return str(uid).strip().rstrip("\x00").strip()


def deidentify(ds: Dataset, ctx: DeidContext) -> Dataset:
    """Return a de-identified deep copy of `ds` (the input is not modified).

    Raises IngestError("burned_in_annotation") when the pixels may carry PHI (`check_pixels_reviewed`:
    BurnedInAnnotation "YES", or a quarantined modality without BurnedInAnnotation "NO"): pixel-level
    redaction is out of scope, so such images are refused. Only Table E.1-1 rows (after their action) and
    allowlisted attributes remain, at every depth. PatientID becomes `ctx.pseudonym(original PatientID)`
    and PatientName the same value as the family-name component of a person name ("ANON-...^"), so DICOM
    readers and writers take it as one name.
    """
    check_pixels_reviewed(ds)
    out = copy.deepcopy(ds)
    pseudonym = ctx.pseudonym(str(ds.get("PatientID", "") or ""))
    _clean_dataset(out, ctx)
    _clean_file_meta(out, ctx)
    _mark_deidentified(out, pseudonym)
    return out


def _clean_dataset(ds: Dataset, ctx: DeidContext) -> None:
    """Apply the rules of the module docstring to every element of `ds`, recursing into sequence items."""
    for tag in list(ds.keys()):
        action = _tag_action(tag)
        # Converting a raw element makes its VR and value known; only kept ones are converted, so a bad
        # value in an element that goes anyway cannot fail the upload.
        elem = ds[tag] if action != "X" else None
        if elem is None or elem.VR == "UN":
            del ds[tag]
            continue
        if action == "Z":
            elem.value = Sequence() if elem.VR == "SQ" else elem.empty_value
        elif action == "D":
            elem.value = _dummy(elem)
        _clean_value(elem, ctx)


def _tag_action(tag: BaseTag) -> str:
    """X remove, Z empty, D dummy, U or K keep (U's UIDs are remapped by the VR rule in `_clean_value`)."""
    if tag.is_private or 0x5000 <= tag.group <= 0x501E or 0x6000 <= tag.group <= 0x601E:
        return "X"  # overlay planes can carry burned-in text and comments; curves are retired free data
    if tag.group in (0x0000, 0x0002):
        return "X"  # command and file meta elements do not belong in a dataset (nor can be written there)
    if tag in MODIFIED_DATES_OPTION:
        return "K"
    action = BASIC_PROFILE_ACTIONS.get(tag)
    if action is not None:
        return action
    return "K" if tag in ALLOWLIST else "X"


def _dummy(elem: DataElement) -> object:
    """D: a sequence becomes empty (no item can leak), a UID a remapped one, text "ANONYMIZED"; other VRs
    (dates, numbers, binary) have no dummy that is both valid and meaningless, so they are emptied."""
    if elem.VR == "SQ":
        return Sequence()
    if elem.VR == "UI":
        return elem.value  # remapped by the VR rule in `_clean_value`, as for U
    return _DUMMY_TEXT if elem.VR in _DUMMY_TEXT_VRS else elem.empty_value


def _clean_value(elem: DataElement, ctx: DeidContext) -> None:
    """Rules for whole value representations, applied wherever the element sits."""
    if elem.VR == "SQ":
        for item in elem.value:
            _clean_dataset(item, ctx)
    elif elem.VR == "UI" and elem.tag not in KEEP_UID_TAGS and not elem.is_empty:
        elem.value = _map_values(elem.value, lambda v: ctx.remap_uid(v) if _clean_uid(v) else "")
    elif elem.VR == "PN" and not elem.is_empty and elem.value != _DUMMY_TEXT:
        elem.value = elem.empty_value
    elif elem.VR == "DA" and not elem.is_empty:
        elem.value = _map_values(elem.value, lambda v: ctx.shift_date(str(v)))
    elif elem.VR == "DT" and not elem.is_empty:
        elem.value = _map_values(elem.value, lambda v: ctx.shift_datetime(str(v)))


def _map_values(value: object, fn) -> object:  # type: ignore[no-untyped-def]
    if isinstance(value, str | bytes) or not hasattr(value, "__iter__"):
        return fn(value.decode("ascii", "replace") if isinstance(value, bytes) else str(value))
    return [fn(str(v)) for v in value]  # type: ignore[attr-defined]


def _clean_file_meta(ds: Dataset, ctx: DeidContext) -> None:
    meta = getattr(ds, "file_meta", None)
    if meta is None:
        return
    for tag in list(meta.keys()):
        if tag not in _META_KEEP:
            del meta[tag]
    if "MediaStorageSOPInstanceUID" in meta:
        meta.MediaStorageSOPInstanceUID = ctx.remap_uid(meta.MediaStorageSOPInstanceUID)


def _mark_deidentified(ds: Dataset, pseudonym: str) -> None:
    ds.PatientName = f"{pseudonym}^"  # family name only: a single-component PN is ambiguous in DICOM
    ds.PatientID = pseudonym
    ds.PatientIdentityRemoved = "YES"
    ds.LongitudinalTemporalInformationModified = "MODIFIED"
    ds.DeidentificationMethod = list(_METHOD)
    codes = Sequence()
    for value, meaning in _METHOD_CODES:
        item = Dataset()
        item.CodeValue = value
        item.CodingSchemeDesignator = "DCM"
        item.CodeMeaning = meaning
        codes.append(item)
    ds.DeidentificationMethodCodeSequence = codes
