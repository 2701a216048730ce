"""COCO export: one JSON with an image entry per case and one annotation per (revision, label), the mask as
uncompressed COCO RLE (`iscrowd=1`): counts of alternating 0/1 runs over the column-major pixels, starting
with background. `rle_decode` is the reference reader (pycocotools reads the same)."""

from __future__ import annotations

import json

import numpy as np

from annotations.models import Project
from workers.services.exports.common import Item, ZipOut, reader_pseudonym


def rle_encode(binary: np.ndarray) -> dict:
    """(H, W) boolean -> {"size": [H, W], "counts": [...]} (COCO order: column-major, zeros first)."""
    h, w = binary.shape
    flat = np.asarray(binary, dtype=bool).ravel(order="F")
    if flat.size == 0:
        return {"size": [h, w], "counts": []}
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    counts = np.diff(np.concatenate(([0], change, [flat.size])))
    if flat[0]:
        counts = np.concatenate(([0], counts))
    return {"size": [int(h), int(w)], "counts": counts.tolist()}


def rle_decode(rle: dict) -> np.ndarray:
    """The inverse of `rle_encode`; refuses counts that do not cover the image exactly."""
    h, w = (int(v) for v in rle["size"])
    counts = np.asarray(rle["counts"], dtype=np.int64)
    if (counts < 0).any() or int(counts.sum()) != h * w:
        raise ValueError(f"RLE counts cover {int(counts.sum())} pixels, not {h * w}")
    values = (np.arange(counts.size) % 2).astype(bool)
    return np.repeat(values, counts).reshape((h, w), order="F")


def label_rles(mask: np.ndarray) -> dict[int, tuple[dict, int, list[int]]]:
    """label value -> (COCO RLE, area, bbox [x, y, w, h]) for every foreground label of a label map.

    One pass over the pixels: the column-major runs of the whole label map, cut at column boundaries so a
    run never spans two columns; each label's RLE, area and box are then derived from those few runs."""
    h, w = mask.shape
    flat = np.ascontiguousarray(mask.T).ravel()
    n = flat.size
    if n == 0:
        return {}
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    starts = np.union1d(change, np.arange(0, n, h))
    lengths = np.diff(np.append(starts, n))
    values = flat[starts]
    out: dict[int, tuple[dict, int, list[int]]] = {}
    for value in np.unique(values):
        if value == 0:
            continue
        fg = values == value
        flips = np.flatnonzero(fg[1:] != fg[:-1]) + 1
        counts = np.diff(np.concatenate(([0], starts[flips], [n])))
        if fg[0]:
            counts = np.concatenate(([0], counts))
        s, length = starts[fg], lengths[fg]
        cols, top = s // h, s % h
        bottom = top + length - 1
        x0, y0 = int(cols.min()), int(top.min())
        bbox = [x0, y0, int(cols.max()) - x0 + 1, int(bottom.max()) - y0 + 1]
        out[int(value)] = ({"size": [int(h), int(w)], "counts": counts.tolist()}, int(length.sum()), bbox)
    return out


def coco_document(project: Project, items: list[Item], tick) -> dict:
    images: dict[int, dict] = {}
    annotations: list[dict] = []
    for item in items:
        case, mask = item.ann.case, item.mask()
        images.setdefault(
            case.pk,
            {
                "id": case.pk,
                "width": int(mask.shape[1]),
                "height": int(mask.shape[0]),
                "file_name": f"image-{case.image_id}/slice-{case.slice_index:05d}",
                "hitl_image_id": case.image_id,
                "slice_index": case.slice_index,
            },
        )
        ids = []
        for value, (rle, area, bbox) in label_rles(mask).items():
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": case.pk,
                    "category_id": value,
                    "segmentation": rle,
                    "area": area,
                    "bbox": bbox,
                    "iscrowd": 1,
                    "revision_id": item.ann.pk,
                    "reader": reader_pseudonym(project, item.ann.author_id),
                }
            )
            ids.append(len(annotations))
        item.files["coco"] = {"path": "masks/coco.json", "annotation_ids": ids, "image_id": case.pk}
        tick()
    return {
        "info": {"description": f"HITL export of project {project.pk}", "version": "1"},
        "images": list(images.values()),
        "categories": [
            {"id": int(c["value"]), "name": c["name"], "supercategory": "label"}
            for c in sorted(project.label_classes, key=lambda c: c["value"])
        ],
        "annotations": annotations,
    }


def write_coco(out: ZipOut, project: Project, items: list[Item], tick) -> None:
    doc = coco_document(project, items, tick)
    out.add("masks/coco.json", json.dumps(doc, separators=(",", ":")).encode())


def coco_masks(doc: dict) -> dict[tuple[int, int], np.ndarray]:
    """Read back: (image id = case id, revision id) -> label map rebuilt from the RLE annotations."""
    sizes = {img["id"]: (img["height"], img["width"]) for img in doc["images"]}
    out: dict[tuple[int, int], np.ndarray] = {}
    for ann in doc["annotations"]:
        key = (ann["image_id"], ann["revision_id"])
        label = out.setdefault(key, np.zeros(sizes[ann["image_id"]], dtype=np.uint8))
        label[rle_decode(ann["segmentation"])] = ann["category_id"]
    return out
