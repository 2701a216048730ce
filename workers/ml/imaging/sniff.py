"""Content sniffing (magic numbers, never the file extension alone) and bounded gunzip."""

from __future__ import annotations

import struct
import zlib

from workers.ml.imaging.errors import IngestError

_PNG = b"\x89PNG\r\n\x1a\n"
_TIFF = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF, both byte orders
_ZIP = (b"PK\x03\x04", b"PK\x05\x06")  # a member first, or an empty archive
_CHUNK = 1 << 20


def sniff(data: bytes) -> str:
    """One of "dicom", "png", "tiff", "gzip", "zip", "nifti", or "unknown" (maybe DICOM without preamble)."""
    if len(data) >= 132 and data[128:132] == b"DICM":
        return "dicom"
    if data.startswith(_PNG):
        return "png"
    if data[:4] in _TIFF:
        return "tiff"
    if data.startswith(b"\x1f\x8b"):
        return "gzip"
    if data[:4] in _ZIP:
        return "zip"
    if is_nifti(data):
        return "nifti"
    return "unknown"


def is_nifti(data: bytes) -> bool:
    """NIfTI-1 (sizeof_hdr 348, magic at 344) or NIfTI-2 (sizeof_hdr 540, magic at 4), either endian."""
    if len(data) < 348:
        return False
    sizes = {struct.unpack("<i", data[:4])[0], struct.unpack(">i", data[:4])[0]}
    if 348 in sizes and data[344:348] in (b"n+1\x00", b"ni1\x00"):
        return True
    return 540 in sizes and data[4:8] in (b"n+2\x00", b"ni2\x00")


def inflate_prefix(data: bytes, n_bytes: int, *, wbits: int) -> bytes:
    """At most the first `n_bytes` of a gzip (wbits=31) or raw deflate (wbits=-15) stream: enough to read
    a header without inflating the rest. Raises not_an_image when the stream is corrupt."""
    try:
        return zlib.decompressobj(wbits=wbits).decompress(data, n_bytes)
    except zlib.error:
        raise IngestError("not_an_image", "the compressed stream is corrupt") from None


def inflate_limited(data: bytes, max_bytes: int) -> bytes:
    """Inflate one raw deflate stream (e.g. a DICOM dataset in Deflated Explicit VR Little Endian) to at
    most `max_bytes`, in bounded chunks. Raises archive_too_large past the limit, malformed_dicom when the
    stream is corrupt or truncated."""
    out = bytearray()
    inflater = zlib.decompressobj(wbits=-zlib.MAX_WBITS)
    try:
        _inflate_into(out, inflater, data, max_bytes)
    except zlib.error:
        raise IngestError("malformed_dicom", "the deflated DICOM data is corrupt") from None
    if not inflater.eof:
        raise IngestError("malformed_dicom", "the deflated DICOM data is truncated")
    return bytes(out)


def gunzip_limited(data: bytes, max_bytes: int) -> bytes:
    """Decompress gzip (all concatenated members) producing at most `max_bytes`, in bounded chunks.

    Output is capped per call with `max_length`, so a gzip bomb stops at the limit instead of filling
    memory. Raises archive_too_large past the limit, not_an_image when the stream is corrupt.
    """
    out = bytearray()
    pending = data
    try:
        while pending:
            inflater = zlib.decompressobj(wbits=31)
            _inflate_into(out, inflater, pending, max_bytes)
            if not inflater.eof:
                raise IngestError("not_an_image", "the gzip stream is truncated")
            pending = inflater.unused_data.lstrip(b"\x00")  # trailing padding is legal
    except zlib.error:
        raise IngestError("not_an_image", "the gzip stream is corrupt") from None
    return bytes(out)


def _inflate_into(out: bytearray, inflater: zlib._Decompress, data: bytes, max_bytes: int) -> None:
    """Feed `data` to `inflater` in output chunks of at most _CHUNK, appending to `out`; raises
    archive_too_large as soon as `out` passes `max_bytes` (so a bomb never fills memory)."""
    chunk = inflater.decompress(data, _CHUNK)
    while True:
        out += chunk
        if len(out) > max_bytes:
            raise IngestError("archive_too_large", f"decompressed data exceeds {max_bytes} bytes")
        if inflater.eof or not (chunk or inflater.unconsumed_tail):
            return  # done, or no progress possible (flushing b"" gave nothing)
        chunk = inflater.decompress(inflater.unconsumed_tail, _CHUNK)
