"""Image ingestion: content sniffing, safe archive handling, DICOM de-identification, parsing to arrays.

Pure: bytes in, numpy arrays and frozen dataclasses out; nothing touches disk, nothing is logged.
"""

from workers.ml.imaging.deid import DeidContext, deidentify
from workers.ml.imaging.errors import INGEST_ERROR_CODES, IngestError, Limits
from workers.ml.imaging.ingest import parse_mask, parse_upload
from workers.ml.imaging.model import DicomUids, ParsedImage, content_hash
from workers.ml.imaging.nifti import from_slices, to_slices
from workers.ml.imaging.profile import BASIC_PROFILE_ACTIONS, MODIFIED_DATES_OPTION

__all__ = [
    "BASIC_PROFILE_ACTIONS",
    "INGEST_ERROR_CODES",
    "MODIFIED_DATES_OPTION",
    "DeidContext",
    "DicomUids",
    "IngestError",
    "Limits",
    "ParsedImage",
    "content_hash",
    "deidentify",
    "from_slices",
    "parse_mask",
    "parse_upload",
    "to_slices",
]
