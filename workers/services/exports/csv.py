"""Agreement statistics and correction effort per case, as computed for the manifest and as a CSV.

Agreement uses each reader's latest reader revision of the case within the job's snapshot (annotation id
<= snapshot_id), so a rerun of the same job gives the same numbers."""

from __future__ import annotations

import csv
import io
from collections import defaultdict

from annotations.models import Annotation, AnnotationKind, Project
from hitl.core.storage import bytes_load, mask_from_png
from workers.ml.agreement.metrics import case_agreement
from workers.services.exports.common import Item, ZipOut, reader_pseudonym


def _r(value: float | None) -> float | None:
    return None if value is None else round(float(value), 6)


def case_agreements(*, project: Project, case_ids: set[int], snapshot_id: int) -> dict[int, dict]:
    """case id -> agreement numbers for the cases read by 2+ readers (others are absent)."""
    latest: dict[int, dict[int, Annotation]] = defaultdict(dict)
    rows = (
        Annotation.objects.filter(
            case_id__in=case_ids, kind=AnnotationKind.READER, id__lte=snapshot_id, case__project=project
        )
        .select_related("case__image")
        .order_by("case_id", "author_id", "revision")
    )
    for ann in rows:
        if ann.author_id is not None:  # a reader's revision always has its author
            latest[ann.case_id][ann.author_id] = ann  # the last one per author wins
    out: dict[int, dict] = {}
    for case_id, by_author in latest.items():
        if len(by_author) < 2:
            continue
        anns = sorted(by_author.values(), key=lambda a: a.pk)
        spacing = [float(v) for v in anns[0].case.image.spacing[:2]]
        result = case_agreement([mask_from_png(bytes_load(a.mask_path)) for a in anns], spacing)
        pairs = result.pairs
        out[case_id] = {
            "readers": result.n_readers,
            "revision_ids": [a.pk for a in anns],
            "mean_pairwise_dice": _r(result.mean_pairwise_dice),
            "mean_pairwise_iou": _r(sum(p.iou for p in pairs) / len(pairs)),
            "mean_pairwise_hd95_mm": _r(result.mean_pairwise_hd95),
            "mean_pairwise_assd_mm": _r(sum(p.assd for p in pairs) / len(pairs)),
            "mean_surface_dice": _r(sum(p.surface_dice for p in pairs) / len(pairs)),
            "kappa": _r(result.kappa),
            "kappa_method": result.kappa_method,
            "dice_vs_consensus": {
                str(a.pk): _r(s.dice) for a, s in zip(anns, result.readers_vs_consensus, strict=True)
            },
        }
    return out


COLUMNS = [
    "case_id",
    "image_id",
    "slice_index",
    "split",
    "study_uid",
    "series_uid",
    "exported_revision_ids",
    "readers",
    "reader_pseudonyms",
    "agreement_revision_ids",
    "mean_pairwise_dice",
    "mean_pairwise_iou",
    "mean_pairwise_hd95_mm",
    "mean_pairwise_assd_mm",
    "mean_surface_dice",
    "kappa",
    "kappa_method",
    "time_spent_s_total",
    "effort_dice_mean",
    "pixels_changed_total",
    "proposal_model_versions",
]


def _join(values) -> str:
    return " ".join(str(v) for v in values)


def csv_rows(project: Project, items: list[Item], agreements: dict[int, dict]) -> list[dict]:
    by_case: dict[int, list[Item]] = defaultdict(list)
    for item in items:
        by_case[item.ann.case_id].append(item)
    rows = []
    for case_id in sorted(by_case):
        group = by_case[case_id]
        case, image = group[0].ann.case, group[0].image
        anns = [i.ann for i in group]
        efforts = [a.effort_dice for a in anns if a.effort_dice is not None]
        changed = [a.pixels_changed for a in anns if a.pixels_changed is not None]
        agreement = agreements.get(case_id, {})
        readers = sorted({p for a in anns if (p := reader_pseudonym(project, a.author_id))})
        rows.append(
            {
                "case_id": case_id,
                "image_id": image.pk,
                "slice_index": case.slice_index,
                "split": case.split,
                "study_uid": image.study_uid,
                "series_uid": image.series_uid,
                "exported_revision_ids": _join(a.pk for a in anns),
                "readers": agreement.get("readers", len(readers)),
                "reader_pseudonyms": _join(readers),
                "agreement_revision_ids": _join(agreement.get("revision_ids", [])),
                **{key: agreement.get(key, "") for key in COLUMNS[10:17]},
                "time_spent_s_total": _r(sum(a.time_spent_s for a in anns)),
                "effort_dice_mean": _r(sum(efforts) / len(efforts)) if efforts else "",
                "pixels_changed_total": sum(changed) if changed else "",
                "proposal_model_versions": _join(
                    sorted({a.proposal_model_version.number for a in anns if a.proposal_model_version})
                ),
            }
        )
    return rows


def write_csv(out: ZipOut, project: Project, items: list[Item], agreements: dict[int, dict], tick) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(csv_rows(project, items, agreements))
    out.add("agreement.csv", buf.getvalue().encode())
    for _ in items:
        tick()
