"""Checks an upload can pass in the web process, before it is staged: size, magic number, and what a
header alone declares. No decoder runs and no more than the first kilobytes are read (a zip's central
directory excepted), so a hostile file costs the web process nothing; whatever passes is parsed later,
in the sandboxed child (`sandbox.py`), where every check runs again on the real bytes."""

from __future__ import annotations

import struct
import zipfile

from workers.ml.imaging.archive import check_directory, check_listing
from workers.ml.imaging.errors import IngestError, Limits, SeekableFile
from workers.ml.imaging.nifti import HEADER_BYTES, check_nifti_header, nifti_header
from workers.ml.imaging.sniff import inflate_prefix, is_nifti, sniff

_HEAD_BYTES = 4096


def preflight(fh: SeekableFile, size: int, limits: Limits) -> str:
    """The sniffed kind of the file in `fh` (seekable; left at offset 0), or IngestError: too_large over
    `limits.max_file_bytes` or over a pixel limit its header declares; not_an_image when empty, when a
    NIfTI is shorter than its header says, a gzip holds no NIfTI, or what is left cannot begin a DICOM
    dataset; unsafe_archive / archive_too_large from a zip's listing.
    """
    if size > limits.max_file_bytes:
        raise IngestError("too_large", f"the file is {size} bytes, more than {limits.max_file_bytes}")
    if size == 0:
        raise IngestError("not_an_image", "the file is empty")
    fh.seek(0)
    head = fh.read(_HEAD_BYTES)
    fh.seek(0)
    kind = sniff(head)
    if kind == "png":
        _check_png(head, limits)
    elif kind == "nifti":
        check_nifti_header(nifti_header(head), limits, data_len=size)
    elif kind == "gzip":
        _check_gzip(head, limits)
    elif kind == "zip":
        _check_zip(fh, limits)
    elif kind == "unknown":
        _check_bare_dicom(head)
    return kind


def _check_bare_dicom(head: bytes) -> None:
    """Without a preamble only a DICOM dataset is left, and it starts with its lowest tag: group 0002 (file
    meta) or 0008 (SOP Common, mandatory), in either byte order. Anything else is not an image."""
    if len(head) < 8 or not {head[:2], head[1::-1]} & {b"\x02\x00", b"\x08\x00"}:
        raise IngestError("not_an_image", "the file is not a recognised image format")


def _check_png(head: bytes, limits: Limits) -> None:
    """IHDR is the first chunk: width and height at bytes 16..24 (big-endian)."""
    if len(head) < 24 or head[12:16] != b"IHDR":
        raise IngestError("not_an_image", "the PNG file could not be decoded")
    width, height = struct.unpack(">II", head[16:24])
    limits.check_slice(height, width)
    limits.check_pixels(height * width)


def _check_gzip(head: bytes, limits: Limits) -> None:
    prefix = inflate_prefix(head, HEADER_BYTES, wbits=31)
    if not is_nifti(prefix):
        raise IngestError("not_an_image", "a gzip file must contain a NIfTI image")
    check_nifti_header(nifti_header(prefix), limits, data_len=None)


def _check_zip(fh: SeekableFile, limits: Limits) -> None:
    try:
        check_directory(fh, limits)
        with zipfile.ZipFile(fh) as archive:
            check_listing(archive.infolist(), limits)
    except IngestError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError, OSError):
        raise IngestError("unsafe_archive", "the zip archive is corrupt") from None
    finally:
        fh.seek(0)
