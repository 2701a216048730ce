"""COCO export: one JSON with an image entry per case and one annotation per (revision, label), the mask as
uncompressed COCO RLE (`iscrowd=1`): counts of alternating 0/1 runs over the column-major pixels, starting
with background. `coco_rle_decode` is the reference reader (pycocotools reads the same). The run-length
core is hitl.core.rle, shared with the API's own mask format."""

from __future__ import annotations

import json

import numpy as np

from annotations.models import Project
from hitl.core.rle import expand_runs, runs
from workers.services.exports.common import Item, ZipOut, reader_pseudonym


def _coco_counts(starts: np.ndarray, foreground_first: bool, size: int) -> list[int]:
    """Starts of the alternating runs of a binary sequence of `size` pixels -> COCO counts: run lengths,
    with a leading 0 when the sequence begins with foreground (COCO's first count is background)."""
    counts = np.diff(np.append(starts, size))
    if foreground_first:
        counts = np.concatenate(([0], counts))
    return counts.tolist()


def coco_rle_encode(binary: np.ndarray) -> dict:
    """(H, W) boolean -> {"size": [H, W], "counts": [...]} (COCO order: column-major, zeros first)."""
    h, w = binary.shape
    flat = np.asarray(binary, dtype=bool).ravel(order="F")
    if flat.size == 0:
        return {"size": [h, w], "counts": []}
    starts, _ = runs(flat)
    return {"size": [int(h), int(w)], "counts": _coco_counts(starts, bool(flat[0]), flat.size)}


def coco_rle_decode(rle: dict) -> np.ndarray:
    """The inverse of `coco_rle_encode`; refuses counts that do not cover the image exactly."""
    h, w = (int(v) for v in rle["size"])
    counts = np.asarray(rle["counts"], dtype=np.int64)
    if (counts < 0).any() or int(counts.sum()) != h * w:
        raise ValueError(f"RLE counts cover {int(counts.sum())} pixels, not {h * w}")
    values = (np.arange(counts.size) % 2).astype(bool)
    return expand_runs(values, counts).reshape((h, w), order="F")


def label_rles(mask: np.ndarray) -> dict[int, tuple[dict, int, list[int]]]:
    """label value -> (COCO RLE, area, bbox [x, y, w, h]) for every foreground label of a label map.

    One pass over the pixels: the column-major runs of the whole label map, cut at column boundaries so a
    run never spans two columns; each label's RLE, area and box are then derived from those few runs."""
    h, w = mask.shape
    flat = np.ascontiguousarray(mask.T).ravel()
    n = flat.size
    if n == 0:
        return {}
    starts = np.union1d(runs(flat)[0], np.arange(0, n, h))
    lengths = np.diff(np.append(starts, n))
    values = flat[starts]
    out: dict[int, tuple[dict, int, list[int]]] = {}
    for value in np.unique(values):
        if value == 0:
            continue
        fg = values == value
        # the label's 0/1 runs are the runs of `fg` over the fine runs, each starting at its first fine run
        counts = _coco_counts(starts[runs(fg)[0]], bool(fg[0]), n)
        s, length = starts[fg], lengths[fg]
        cols, top = s // h, s % h
        bottom = top + length - 1
        x0, y0 = int(cols.min()), int(top.min())
        bbox = [x0, y0, int(cols.max()) - x0 + 1, int(bottom.max()) - y0 + 1]
        out[int(value)] = ({"size": [int(h), int(w)], "counts": counts}, int(length.sum()), bbox)
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
        label[coco_rle_decode(ann["segmentation"])] = ann["category_id"]
    return out
