"""Arrays and masks on the storage backend (local disk or S3 through django-storages).

Arrays are .npy (no pickle: `allow_pickle=False` on load). Masks are 8-bit label PNGs."""

import io
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from PIL import Image as PILImage


def bytes_save(name: str, data: bytes) -> str:
    """Save under `name` (the backend may alter it to stay unique); returns the stored name."""
    return default_storage.save(name, ContentFile(data))


def bytes_load(name: str) -> bytes:
    with default_storage.open(name, "rb") as fh:
        return fh.read()


def delete_quietly(names: list[str]) -> None:
    for name in names:
        try:
            default_storage.delete(name)
        except OSError:
            pass


def array_to_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()


def array_load(name: str) -> np.ndarray:
    return np.load(io.BytesIO(bytes_load(name)), allow_pickle=False)


def array_open(name: str) -> np.ndarray:
    """The array read-only without reading all of it: memory-mapped from local disk (the operating system
    pages in what a slice or a reslice touches), else loaded whole (a remote backend)."""
    try:
        path = default_storage.path(name)
    except NotImplementedError:
        return array_load(name)
    return np.load(path, mmap_mode="r", allow_pickle=False)


def mask_to_png(mask: np.ndarray) -> bytes:
    """(H, W) integer labels 0..255 -> lossless 8-bit PNG."""
    if mask.ndim != 2:
        raise ValueError("a mask is a 2D label map")
    if mask.size and (mask.min() < 0 or mask.max() > 255):
        raise ValueError("mask labels must be within 0..255")
    buf = io.BytesIO()
    PILImage.fromarray(mask.astype(np.uint8), mode="L").save(
        buf, format="PNG", optimize=False, compress_level=6
    )
    return buf.getvalue()


def mask_from_png(data: bytes) -> np.ndarray:
    with PILImage.open(io.BytesIO(data)) as im:
        if im.mode not in ("L", "P", "1"):
            raise ValueError("a mask PNG must be single-channel")
        return np.asarray(im.convert("L") if im.mode == "1" else im, dtype=np.uint8).copy()


@contextmanager
def saved_unless_failed(name: str, data: bytes) -> Iterator[str]:
    """Store `data` at `name` for the row written inside the block; if the block raises (the row failed),
    delete the file again so no orphan is left. Yields the stored name."""
    path = bytes_save(name, data)
    try:
        yield path
    except BaseException:
        delete_quietly([path])
        raise


def label_counts(mask: np.ndarray) -> dict[str, int]:
    """{label value: pixel count} of a mask, as a revision records it."""
    values, counts = np.unique(mask, return_counts=True)
    return {str(int(v)): int(c) for v, c in zip(values, counts, strict=True)}
