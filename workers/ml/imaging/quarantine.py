"""Refusing images whose pixels may carry PHI: declared burned-in annotation, and quarantined modalities.

De-identification cleans attributes, not pixels. An image that declares text burned into its pixels
(BurnedInAnnotation "YES") is refused. Ultrasound, secondary capture (by modality or by SOP class), external
camera, endoscopy and "other" images commonly carry names, dates and IDs in their pixels whether or not they
say so, so they are refused unless BurnedInAnnotation is explicitly "NO": a person who has looked at the
pixels can set it to import them. Messages name only a modality code from the fixed set below, never a
value from the file.
"""

from __future__ import annotations

from pydicom.dataset import Dataset

from workers.ml.imaging.errors import IngestError

QUARANTINED_MODALITIES: frozenset[str] = frozenset({"US", "SC", "XC", "OT", "ES"})
# Secondary Capture Image Storage and the four multi-frame Secondary Capture storage classes.
SECONDARY_CAPTURE_CLASSES: frozenset[str] = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.7",
        "1.2.840.10008.5.1.4.1.1.7.1",
        "1.2.840.10008.5.1.4.1.1.7.2",
        "1.2.840.10008.5.1.4.1.1.7.3",
        "1.2.840.10008.5.1.4.1.1.7.4",
    }
)


def check_pixels_reviewed(ds: Dataset) -> None:
    """Raise IngestError("burned_in_annotation") unless the pixels may be imported as they are.

    Contract: BurnedInAnnotation "YES" is always refused; "NO" (case and padding ignored) always passes;
    otherwise (absent, empty, any other value) an image of a quarantined modality or a Secondary Capture SOP
    class (dataset or file meta) is refused. The message holds no value read from the file.
    """
    flag = _text(ds.get("BurnedInAnnotation")).upper()
    if flag == "YES":
        raise IngestError("burned_in_annotation", "the image declares burned-in annotation (possible PHI)")
    if flag == "NO":
        return
    code = _quarantine_code(ds)
    if code is not None:
        raise IngestError(
            "burned_in_annotation",
            f"{code} images often have patient details burned into the pixels, so they are held back; "
            "after reviewing the pixels, set BurnedInAnnotation to NO in the file to import it",
        )


def _quarantine_code(ds: Dataset) -> str | None:
    """The quarantined modality code of `ds` ("SC" for a Secondary Capture SOP class), or None."""
    modality = _text(ds.get("Modality")).upper()
    if modality in QUARANTINED_MODALITIES:
        return modality
    meta = getattr(ds, "file_meta", None)
    classes = {_text(ds.get("SOPClassUID")), _text(meta.get("MediaStorageSOPClassUID") if meta else None)}
    return "SC" if classes & SECONDARY_CAPTURE_CLASSES else None


def _text(value: object) -> str:
    return str(value or "").strip().rstrip("\x00").strip()
