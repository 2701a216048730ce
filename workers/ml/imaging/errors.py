"""Ingestion errors and resource limits.

Every failure while parsing an upload surfaces as `IngestError` with a stable machine-readable `code`
and a human message. Messages are written here, from fixed text plus sizes/counts only: they never
quote file names, tag values, UIDs or dates, because uploads carry PHI until they are de-identified.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

INGEST_ERROR_CODES: frozenset[str] = frozenset(
    {
        "not_an_image",
        "malformed_dicom",
        "no_pixel_data",
        "unsupported_transfer_syntax",
        "unsafe_archive",
        "archive_too_large",
        "too_large",
        "empty_archive",
        "mask_shape_mismatch",
        "mask_labels_invalid",
        "burned_in_annotation",
        "inconsistent_series",
        "duplicate_instance",
        "ingest_failed",
        "ingest_timeout",
        "storage_full",
    }
)
# The HTTP status an API answers for each code: too big -> 413, already stored -> 409, the rest 400.
INGEST_ERROR_STATUS: dict[str, int] = {
    "too_large": 413,
    "archive_too_large": 413,
    "duplicate_instance": 409,
    "storage_full": 507,
}


class IngestError(ValueError):
    """An upload that cannot be ingested. `code` is one of `INGEST_ERROR_CODES`.

    Callers should show `str(err)` to the user and store `err.code`; both are PHI-free by construction.
    Translate third-party exceptions with ``raise IngestError(...) from None`` so their text (which may
    quote tag values) is not chained into logged tracebacks.
    """

    def __init__(self, code: str, message: str) -> None:
        if code not in INGEST_ERROR_CODES:
            raise ValueError(f"unknown ingest error code {code!r}")
        super().__init__(message)
        self.code = code

    def __reduce__(self) -> tuple[type[IngestError], tuple[str, str]]:
        # Celery pickles exceptions across processes; keep both arguments.
        return (type(self), (self.code, str(self)))


@dataclass(frozen=True)
class Limits:
    """Resource limits for one upload.

    max_file_bytes: size of the upload itself and of any single file inside an archive.
    max_uncompressed_bytes: total bytes produced by decompressing (all zip members together, or a .gz).
    max_members: entries in a zip (directories included).
    max_ratio: uncompressed/compressed size of any one zip member.
    max_pixels: voxels (S*H*W, channels not counted) of one upload, checked from headers before decoding.
    max_slice_pixels: pixels (H*W) of any one slice or 2D image, checked from headers before decoding.
    """

    max_file_bytes: int = 1 << 30
    max_uncompressed_bytes: int = 4 << 30
    max_members: int = 10_000
    max_ratio: float = 200.0
    max_pixels: int = 1 << 28
    max_slice_pixels: int = 1 << 26

    def __post_init__(self) -> None:
        for name in (
            "max_file_bytes",
            "max_uncompressed_bytes",
            "max_members",
            "max_ratio",
            "max_pixels",
            "max_slice_pixels",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"Limits.{name} must be positive")

    def check_pixels(self, n_pixels: int) -> None:
        """Raise too_large when an image of `n_pixels` voxels would exceed max_pixels."""
        if n_pixels > self.max_pixels:
            raise IngestError(
                "too_large", f"image has {n_pixels} pixels, more than the limit of {self.max_pixels}"
            )

    def check_slice(self, height: int, width: int) -> None:
        """Raise too_large when one slice of `height` x `width` exceeds max_slice_pixels (or is empty:
        not_an_image)."""
        if height <= 0 or width <= 0:
            raise IngestError("not_an_image", "the image declares an empty size")
        if height * width > self.max_slice_pixels:
            raise IngestError(
                "too_large",
                f"a slice of {height} x {width} pixels exceeds the limit of {self.max_slice_pixels} pixels",
            )


class SeekableFile(Protocol):
    """A binary file, or anything with its read/seek/tell (e.g. a Django upload)."""

    def read(self, size: int = -1, /) -> bytes: ...
    def seek(self, offset: int, whence: int = 0, /) -> int: ...
    def tell(self) -> int: ...
