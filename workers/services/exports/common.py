"""Shared pieces of the export writers: the zip writer that checksums every member, the per-mask item,
reader pseudonyms and the grouping of slices into volumes."""

from __future__ import annotations

import hashlib
import hmac
import zipfile
from collections import defaultdict
from dataclasses import dataclass, field
from typing import IO

import numpy as np

from annotations.models import Annotation, AnnotationKind, Image, Project
from hitl.core.storage import mask_from_png


def reader_pseudonym(project: Project, user_id: int | None) -> str | None:
    """Stable per project, never the username: "reader-" + 8 hex of HMAC(project salt, user id)."""
    if user_id is None:
        return None
    digest = hmac.new(bytes.fromhex(project.deid_salt), str(user_id).encode(), hashlib.sha256).hexdigest()
    return f"reader-{digest[:8]}"


class ZipOut:
    """A zip being written to `fh`; remembers the sha256 and size of every member for the manifest."""

    def __init__(self, fh: IO[bytes]) -> None:
        self._zip = zipfile.ZipFile(fh, "w", zipfile.ZIP_DEFLATED, compresslevel=6, allowZip64=True)
        self.files: dict[str, dict] = {}

    def add(self, name: str, data: bytes, *, compress: bool = True) -> str:
        """`compress=False` for data that is already compressed (PNG, .gz): deflating it again is waste."""
        if name in self.files:
            raise ValueError(f"duplicate export member {name}")
        self._zip.writestr(name, data, compress_type=zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED)
        self.files[name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
        return name

    def close(self) -> None:
        self._zip.close()


@dataclass
class Item:
    """One exported mask revision. `png` is the stored label PNG, checked against the revision's hash."""

    ann: Annotation
    png: bytes
    track: str
    files: dict = field(default_factory=dict)

    @property
    def image(self) -> Image:
        return self.ann.case.image

    def mask(self) -> np.ndarray:
        return mask_from_png(self.png)


def track_of(ann: Annotation, labels: str, project: Project) -> str:
    """Which volume a revision belongs to: one per policy for latest/consensus, one per reader for all."""
    if labels != "all":
        return labels
    if ann.kind == AnnotationKind.READER:
        return reader_pseudonym(project, ann.author_id) or "reader"
    return str(ann.kind)


def volume_groups(items: list[Item]) -> dict[tuple[int, str, int], list[Item]]:
    """(image id, track, layer) -> items with distinct slices. Layer n holds a reader's n-th revision of a
    slice, so a volume never holds two revisions of one slice."""
    seen: dict[tuple[int, str, int], int] = defaultdict(int)
    groups: dict[tuple[int, str, int], list[Item]] = defaultdict(list)
    for item in sorted(items, key=lambda i: (i.ann.case.image_id, i.track, i.ann.case.slice_index, i.ann.id)):
        slot = (item.ann.case.image_id, item.track, item.ann.case.slice_index)
        layer = seen[slot]
        seen[slot] += 1
        groups[(item.ann.case.image_id, item.track, layer)].append(item)
    return dict(groups)


def group_stem(image_id: int, track: str, layer: int) -> str:
    return f"image-{image_id}_{track}" + (f"_{layer + 1}" if layer else "")
