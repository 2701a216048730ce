"""Safe reading of ZIP uploads.

Checked before anything is extracted: member count, names (absolute paths, drive letters, "..", backslashes,
NUL), symlinks (Unix mode in external_attr), encryption, declared total size, declared per-member size and
compression ratio. Declared sizes can lie, so members are then read in bounded chunks and the size and
ratio limits are enforced again on the bytes actually produced. Nothing is written to disk.
"""

from __future__ import annotations

import io
import posixpath
import re
import stat
import zipfile
import zlib
from collections.abc import Iterator

from workers.ml.imaging.errors import IngestError, Limits, SeekableFile

_CHUNK = 1 << 20
_DIRECTORY_BYTES_PER_ENTRY = 1024  # a central-directory entry: 46 bytes + name + extra + comment
_DRIVE = re.compile(r"^[A-Za-z]:")
_SKIP_DIRS = ("__MACOSX/",)


def zip_members(data: bytes, limits: Limits) -> Iterator[tuple[str, bytes]]:
    """(basename, bytes) of every regular file in the zip, in archive order, after the listing's checks;
    each member is read only when the caller asks for it.

    Skipped without error: directories, macOS resource forks (__MACOSX/), hidden files (".name").
    Raises unsafe_archive, archive_too_large or too_large (a member over max_file_bytes).
    """
    try:
        fh = io.BytesIO(data)
        check_directory(fh, limits)
        archive = zipfile.ZipFile(fh)
        infos = archive.infolist()
    except IngestError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError):
        raise IngestError("unsafe_archive", "the zip archive is corrupt") from None
    with archive:
        check_listing(infos, limits)
        budget = [limits.max_uncompressed_bytes]  # shared across members: the total limit
        for info in infos:
            if _wanted(info):  # one member in memory at a time; the running total spans them all
                yield posixpath.basename(info.filename), _read_member(archive, info, limits, budget)


def check_directory(fh: SeekableFile, limits: Limits) -> None:
    """Refuse a central directory too large for `limits.max_members` before `zipfile` reads it: zipfile
    builds one object per entry until the directory's declared byte size is used up (whatever entry
    count the end record claims), so a 500 MB directory would cost gigabytes of memory."""
    record = zipfile._EndRecData(fh)  # type: ignore[attr-defined]  # the stdlib's end-record reader
    fh.seek(0)
    if record is None:
        raise IngestError("unsafe_archive", "the zip archive is corrupt")
    entries, directory_bytes = record[4], record[5]  # zipfile's _ECD_ENTRIES_TOTAL and _ECD_SIZE
    if entries > limits.max_members or directory_bytes > limits.max_members * _DIRECTORY_BYTES_PER_ENTRY:
        raise IngestError("archive_too_large", f"the archive has more than {limits.max_members} entries")


def check_listing(infos: list[zipfile.ZipInfo], limits: Limits) -> None:
    """Refuse an archive from its central directory alone: entry count, names, links, encryption, declared
    sizes and ratios (the bytes actually produced are checked again while reading)."""
    if len(infos) > limits.max_members:
        raise IngestError(
            "archive_too_large", f"the archive has {len(infos)} entries, more than {limits.max_members}"
        )
    for info in infos:
        _check_entry(info)
    declared = sum(info.file_size for info in infos)
    if declared > limits.max_uncompressed_bytes:
        raise IngestError(
            "archive_too_large",
            f"the archive would expand to {declared} bytes, more than {limits.max_uncompressed_bytes}",
        )
    for info in infos:
        if info.file_size > limits.max_file_bytes:
            raise IngestError("too_large", f"a file in the archive exceeds {limits.max_file_bytes} bytes")
        if info.file_size > limits.max_ratio * max(info.compress_size, 1):
            raise IngestError("unsafe_archive", "a file in the archive has a suspicious compression ratio")


def _check_entry(info: zipfile.ZipInfo) -> None:
    name = info.filename
    parts = name.split("/")
    if "\x00" in name or "\\" in name:
        raise IngestError("unsafe_archive", "an archive entry name contains a backslash or NUL")
    if name.startswith("/") or _DRIVE.match(name):
        raise IngestError("unsafe_archive", "an archive entry has an absolute path")
    if ".." in parts:
        raise IngestError("unsafe_archive", "an archive entry path contains '..'")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise IngestError("unsafe_archive", "the archive contains a symbolic link")
    if info.flag_bits & 0x1:
        raise IngestError("unsafe_archive", "the archive contains an encrypted entry")


def _wanted(info: zipfile.ZipInfo) -> bool:
    base = posixpath.basename(info.filename)
    return (
        not info.is_dir()
        and bool(base)
        and not base.startswith(".")
        and not info.filename.startswith(_SKIP_DIRS)
    )


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limits: Limits, budget: list[int]) -> bytes:
    """Read in chunks, stopping as soon as the real output passes any limit (declared sizes may lie)."""
    cap = min(limits.max_file_bytes, int(limits.max_ratio * max(info.compress_size, 1)))
    out = bytearray()
    try:
        with archive.open(info) as member:
            while chunk := member.read(_CHUNK):
                out += chunk
                budget[0] -= len(chunk)
                if budget[0] < 0:
                    raise IngestError("archive_too_large", "the archive expands past the size limit")
                if len(out) > cap:
                    raise IngestError(
                        "unsafe_archive", "a file in the archive expands past its declared limits"
                    )
    except IngestError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError):
        # Bad CRC, a size that disagrees with the data, or an unsupported compression method.
        raise IngestError("unsafe_archive", "a file in the archive is corrupt") from None
    return bytes(out)
