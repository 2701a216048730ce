"""manifest.json: what is in the zip and where it came from, per mask: case, de-identified study / series /
instance UIDs, reader pseudonym, revision id, created at, time spent, the model version whose proposal the
reader started from, correction effort, agreement numbers where multi-read; and every file's sha256.
Never usernames, e-mails or image display names (file names may carry PHI)."""

from __future__ import annotations

import importlib.metadata
import json

from annotations.models import DicomInstance, Project
from workers.models import ExportJob
from workers.services.exports.common import Item, reader_pseudonym

FORMAT_VERSION = 1


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def mask_entry(project: Project, item: Item, sop_uids: dict[tuple[int, int], str], agreements: dict) -> dict:
    ann, case = item.ann, item.ann.case
    image = case.image
    model = ann.proposal_model_version
    agreement = agreements.get(case.pk)
    if agreement is not None:
        agreement = {
            **{k: v for k, v in agreement.items() if k != "dice_vs_consensus"},
            "this_reader_dice_vs_consensus": agreement["dice_vs_consensus"].get(str(ann.pk)),
        }
    return {
        "revision_id": ann.pk,
        "revision": ann.revision,
        "kind": ann.kind,
        "base_revision_id": ann.base_id,
        "case_id": case.pk,
        "split": case.split,
        "image_id": image.pk,
        "slice_index": case.slice_index,
        "study_uid": image.study_uid or None,
        "series_uid": image.series_uid or None,
        "frame_of_reference_uid": image.frame_of_reference_uid or None,
        "sop_instance_uid": sop_uids.get((image.pk, case.slice_index)),
        "reader": reader_pseudonym(project, ann.author_id),
        "created_at": ann.created_at.isoformat(),
        "time_spent_s": ann.time_spent_s,
        "proposal_model_version": None if model is None else {"id": model.pk, "number": model.number},
        "correction_effort": {"dice": ann.effort_dice, "pixels_changed": ann.pixels_changed},
        "mask_sha256": ann.mask_sha256,
        "label_counts": ann.label_counts,
        "agreement": agreement,
        "files": item.files,
    }


def sop_uid_map(image_ids: set[int]) -> dict[tuple[int, int], str]:
    rows = DicomInstance.objects.filter(image_id__in=image_ids).values_list(
        "image_id", "slice_index", "sop_instance_uid"
    )
    return {(i, s): uid for i, s, uid in rows}


def build_manifest(
    *, job: ExportJob, items: list[Item], agreements: dict, images: list[dict], files: dict, notes: list[str]
) -> dict:
    project = job.project
    sop_uids = sop_uid_map({i.ann.case.image_id for i in items})
    params = {k: v for k, v in job.params.items() if k != "revision_ids"}
    return {
        "format_version": FORMAT_VERSION,
        "export_id": job.pk,
        "project": {"id": project.pk, "label_classes": project.label_classes},
        "requested_by": reader_pseudonym(project, job.requested_by_id),
        "created_at": job.created_at.isoformat(),
        "params": params,
        "revision_ids": [i.ann.pk for i in items],
        "software": {p: _version(p) for p in ("highdicom", "nibabel", "pydicom", "numpy")},
        "notes": notes,
        "counts": {"masks": len(items), "cases": len({i.ann.case_id for i in items}), "images": len(images)},
        "masks": [mask_entry(project, item, sop_uids, agreements) for item in items],
        "images": images,
        "files": files,
    }


def manifest_bytes(manifest: dict) -> bytes:
    return json.dumps(manifest, indent=1, sort_keys=False).encode()


def sha256sums(files: dict[str, dict]) -> bytes:
    """`sha256sum -c` format."""
    return "".join(f"{meta['sha256']}  {name}\n" for name, meta in sorted(files.items())).encode()
