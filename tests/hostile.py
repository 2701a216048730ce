"""Hostile uploads, built byte by byte: small files that declare (or expand to) far more than they hold.

Each builder returns the file's bytes; `CORPUS` names them with the error code the service must answer.
Big payloads are made of zeros streamed through zlib, so building the corpus costs seconds, not memory.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from functools import cache
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file
from pydicom.uid import DeflatedExplicitVRLittleEndian

_MB = 1 << 20


def _zeros_deflated(n_bytes: int, *, wbits: int, level: int = 9) -> bytes:
    comp = zlib.compressobj(level, zlib.DEFLATED, wbits)
    chunk, out = b"\0" * (16 * _MB), []
    for _ in range(n_bytes // len(chunk)):
        out.append(comp.compress(chunk))
    out.append(comp.compress(b"\0" * (n_bytes % len(chunk))))
    out.append(comp.flush())
    return b"".join(out)


def nifti_header(shape: tuple[int, ...], datatype: int = 64, bitpix: int = 64) -> bytes:
    """A NIfTI-1 single-file header (+ the 4-byte extension flag) declaring `shape`; no voxel follows."""
    hdr = bytearray(348)
    struct.pack_into("<i", hdr, 0, 348)
    dims = [len(shape), *shape] + [1] * (7 - len(shape))
    struct.pack_into("<8h", hdr, 40, *dims)
    struct.pack_into("<hh", hdr, 70, datatype, bitpix)
    struct.pack_into("<8f", hdr, 76, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
    struct.pack_into("<f", hdr, 108, 352.0)
    hdr[344:348] = b"n+1\0"
    return bytes(hdr) + b"\0" * 4


def nifti_gz_honest(shape: tuple[int, int, int]) -> bytes:
    """A real .nii.gz of float64 zeros: a few MB that inflate to the whole declared volume."""
    n = shape[0] * shape[1] * shape[2] * 8
    comp = zlib.compressobj(1, zlib.DEFLATED, 31)  # level 1: 2 GB of zeros in under a second
    parts = [comp.compress(nifti_header(shape))]
    chunk = b"\0" * (16 * _MB)
    for _ in range(n // len(chunk)):
        parts.append(comp.compress(chunk))
    parts.append(comp.compress(b"\0" * (n % len(chunk))))
    parts.append(comp.flush())
    return b"".join(parts)


def nifti_gz_bomb(extra_bytes: int) -> bytes:
    """A valid 8x8x3 float64 NIfTI, then `extra_bytes` of zeros inside the same gzip stream."""
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts = [comp.compress(nifti_header((8, 8, 3)) + b"\0" * (8 * 8 * 3 * 8))]
    chunk = b"\0" * (16 * _MB)
    for _ in range(extra_bytes // len(chunk)):
        parts.append(comp.compress(chunk))
    parts.append(comp.flush())
    return b"".join(parts)


def _zip(entries: list[tuple[str, bytes, int, int, int]]) -> bytes:
    """entries: (name, stored bytes, method, declared uncompressed size, crc). Sizes may lie."""
    out, central = io.BytesIO(), io.BytesIO()
    for name, data, method, size, crc in entries:
        offset = out.tell()
        raw = name.encode()
        out.write(
            struct.pack("<4s5H3I2H", b"PK\x03\x04", 20, 0, method, 0, 0, crc, len(data), size, len(raw), 0)
        )
        out.write(raw + data)
        central.write(
            struct.pack(
                "<4s6H3I5H2I",
                b"PK\x01\x02",
                20,
                20,
                0,
                method,
                0,
                0,
                crc,
                len(data),
                size,
                len(raw),
                0,
                0,
                0,
                0,
                0,
                offset,
            )
            + raw
        )
    start, directory = out.tell(), central.getvalue()
    out.write(directory)
    n = len(entries) & 0xFFFF  # past 65535 the end record's count wraps: another lie to survive
    out.write(struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, n, n, len(directory), start, 0))
    return out.getvalue()


def zip_bomb(members: int, member_bytes: int) -> bytes:
    """Honest headers, members of deflated zeros: ratio about 1000."""
    data = _zeros_deflated(member_bytes, wbits=-15)
    crc = zlib.crc32(b"\0" * member_bytes)
    return _zip([(f"slice{i:03d}.dcm", data, 8, member_bytes, crc) for i in range(members)])


def zip_lying_sizes(real_bytes: int) -> bytes:
    """The headers declare 1 KB; the member inflates to `real_bytes`."""
    data = _zeros_deflated(real_bytes, wbits=-15)
    return _zip([("scan.dcm", data, 8, 1024, 0)])


def zip_many_entries(n: int) -> bytes:
    return _zip([(f"e{i}", b"", 0, 0, 0) for i in range(n)])


def zip_nested(depth: int) -> bytes:
    blob = png_1bit(16, 16)
    for level in range(depth):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(f"level{level}.zip" if level else "image.png", blob)
        blob = buf.getvalue()
    return blob


def png_1bit(width: int, height: int) -> bytes:
    """A 1-bit grayscale PNG of zeros: 13000 x 13000 is about 20 KB."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    row = b"\0" * (1 + (width + 7) // 8)
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def tiff_huge_tile_count(width: int = 8192, height: int = 8192, offsets: int = 1 << 30) -> bytes:
    """Classic little-endian TIFF whose TileOffsets/TileByteCounts declare `offsets` entries (the file
    holds none): a reader that trusts the count allocates gigabytes."""
    entries = [
        (256, 4, 1, width),  # ImageWidth
        (257, 4, 1, height),  # ImageLength
        (258, 3, 1, 8),  # BitsPerSample
        (259, 3, 1, 1),  # Compression: none
        (262, 3, 1, 1),  # Photometric: black is zero
        (277, 3, 1, 1),  # SamplesPerPixel
        (322, 3, 1, 16),  # TileWidth
        (323, 3, 1, 16),  # TileLength
        (324, 4, offsets, 1 << 20),  # TileOffsets, beyond the end of the file
        (325, 4, offsets, 1 << 21),  # TileByteCounts
    ]
    ifd = struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        ifd += struct.pack("<HHII", tag, kind, count, value)
    return b"II*\0" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0)


def _ct() -> pydicom.Dataset:
    return pydicom.dcmread(get_testdata_file("CT_small.dcm"))


def dicom_pixel_length_mismatch() -> bytes:
    ds = _ct()
    ds.Rows = ds.Rows * 4  # PixelData holds a quarter of what Rows x Columns needs
    buf = io.BytesIO()
    ds.save_as(buf)
    return buf.getvalue()


def dicom_deflated_bomb(extra_bytes: int) -> bytes:
    """Deflated Explicit VR Little Endian: a valid CT dataset, then `extra_bytes` of zeros in the same
    deflate stream (pydicom inflates it all: 1 MB became 1.1 GB)."""
    ds = _ct()
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    part10 = buf.getvalue()
    meta_end = 132 + 12 + struct.unpack_from("<I", part10, 140)[0]
    body = zlib.decompress(part10[meta_end:], -15)
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    parts = [comp.compress(body)]
    chunk = b"\0" * (16 * _MB)
    for _ in range(extra_bytes // len(chunk)):
        parts.append(comp.compress(chunk))
    parts.append(comp.flush())
    return part10[:meta_end] + b"".join(parts)


@cache
def corpus() -> dict[str, tuple[bytes, str, set[str]]]:
    """name -> (bytes, upload file name, acceptable error codes)."""
    too_big = {"too_large", "archive_too_large"}
    return {
        "nifti header 512x512x1000 float64, no data": (nifti_header((512, 512, 1000)), "a.nii", too_big),
        "nifti header 256x256x100 float64, no data": (
            nifti_header((256, 256, 100)),
            "b.nii",
            {"not_an_image"},
        ),
        "nifti header claiming 2^31 voxels": (nifti_header((2048, 1024, 1024)), "c.nii", too_big),
        "nii.gz declaring 512x512x1000 float64": (nifti_gz_honest((512, 512, 1000)), "d.nii.gz", too_big),
        "nii.gz bomb behind a valid header": (nifti_gz_bomb(512 * _MB), "e.nii.gz", too_big),
        "zip bomb, honest headers": (zip_bomb(8, 256 * _MB), "f.zip", {"unsafe_archive"} | too_big),
        "zip whose sizes lie": (zip_lying_sizes(64 * _MB), "g.zip", {"unsafe_archive"} | too_big),
        "zip with 100000 entries": (zip_many_entries(100_000), "h.zip", too_big),
        "zips nested three deep": (zip_nested(3), "i.zip", {"empty_archive"}),
        "deflated DICOM bomb": (dicom_deflated_bomb(1100 * _MB), "j.dcm", too_big),
        "DICOM pixel data shorter than Rows x Columns": (
            dicom_pixel_length_mismatch(),
            "k.dcm",
            {"malformed_dicom"},
        ),
        "1-bit PNG 13000 x 13000": (png_1bit(13000, 13000), "l.png", too_big),
        "TIFF with 2^30 tiles declared": (tiff_huge_tile_count(), "m.tif", {"not_an_image", "too_large"}),
    }


def write_corpus(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for i, (name, (data, filename, _)) in enumerate(corpus().items()):
        path = folder / f"{i:02d}-{filename}"
        path.write_bytes(data)
        out[name] = path
    return out
