"""Agreement update: after a submission to a multi-reader case, measure how much its readers agree and
store the STAPLE consensus as its own revision.

`agreement_update` is idempotent: the input is each reader's latest revision of the case, and a row for the
same inputs (`Agreement.inputs_key`) is never computed twice. The heavy part (loading masks, metrics,
STAPLE) runs outside any transaction; the writes run in one short transaction under the case row lock (the
same lock `annotation_submit` takes to number revisions)."""

import hashlib
import time
from dataclasses import dataclass
from typing import cast

import numpy as np
from django.db import transaction
from django.db.models import Max

from annotations.models import Agreement, Annotation, AnnotationKind, Case, ReaderAgreement
from hitl.core.audit import audit_record
from hitl.core.storage import bytes_load, label_counts, mask_from_png, mask_to_png, saved_unless_failed
from workers.ml.agreement.metrics import CaseAgreement, case_agreement
from workers.models import ModelVersion, Prediction, VersionState


@dataclass(frozen=True)
class _Inputs:
    case: Case
    readers: list[Annotation]  # each reader's latest revision, by author id
    key: str


def _latest_reader_revisions(case: Case) -> list[Annotation]:
    latest: dict[int, Annotation] = {}
    for ann in case.annotations.filter(kind=AnnotationKind.READER).order_by("-revision"):
        if ann.author_id is not None:  # a reader's revision always has its author
            latest.setdefault(ann.author_id, ann)
    return [latest[a] for a in sorted(latest)]


def inputs_key(readers: list[Annotation]) -> str:
    return ",".join(str(pk) for pk in sorted(a.pk for a in readers))


def _model_mask(case: Case, shape: tuple[int, ...]) -> tuple[ModelVersion | None, np.ndarray | None]:
    """The active version's proposal for the case, if it has one of the right shape."""
    prediction = (
        Prediction.objects.filter(
            case=case, model_version__project_id=case.project_id, model_version__state=VersionState.ACTIVE
        )
        .select_related("model_version")
        .first()
    )
    if prediction is None:
        return None, None
    mask = mask_from_png(bytes_load(prediction.mask_path))
    return (prediction.model_version, mask) if mask.shape == shape else (None, None)


def agreement_compute(*, case: Case, readers: list[Annotation]) -> tuple[CaseAgreement, ModelVersion | None]:
    """Load the readers' masks (and the model's proposal) from storage and compute the agreement."""
    masks = [mask_from_png(bytes_load(a.mask_path)) for a in readers]
    spacing = [float(s) for s in (case.image.spacing or [1.0, 1.0])[:2]]
    version, model = _model_mask(case, masks[0].shape)
    return case_agreement(masks, spacing, model), version


def agreement_update(*, case_id: int) -> Agreement | None:
    """Compute and store the agreement of the case's readers (each reader's latest revision) unless it is
    already stored for exactly these revisions. None when the case is gone or has fewer than two readers."""
    case = Case.objects.select_related("project", "image").filter(pk=case_id).first()
    if case is None:
        return None
    readers = _latest_reader_revisions(case)
    if len(readers) < 2:
        return None
    key = inputs_key(readers)
    done = Agreement.objects.filter(case=case, inputs_key=key).first()
    if done is not None:
        return done
    start = time.perf_counter()
    result, version = agreement_compute(case=case, readers=readers)
    seconds = time.perf_counter() - start
    return agreement_store(
        inputs=_Inputs(case=case, readers=readers, key=key), result=result, version=version, seconds=seconds
    )


def _consensus_revision(case: Case, consensus: np.ndarray) -> Annotation:
    """The newest consensus revision when it already holds this mask, else a new revision (never
    overwritten). Call under the case row lock."""
    png = mask_to_png(consensus.astype(np.uint8))
    digest = hashlib.sha256(png).hexdigest()
    newest = case.annotations.filter(kind=AnnotationKind.CONSENSUS).order_by("-revision").first()
    if newest is not None and newest.mask_sha256 == digest:
        return newest
    revision = (case.annotations.aggregate(m=Max("revision"))["m"] or 0) + 1
    name = f"projects/{case.project_id}/masks/case-{case.pk}/r{revision:04d}-consensus.png"
    with saved_unless_failed(name, png) as path:
        return Annotation.objects.create(
            case=case,
            revision=revision,
            kind=AnnotationKind.CONSENSUS,
            author=None,
            mask_path=path,
            mask_sha256=digest,
            label_counts=label_counts(consensus),
        )


@transaction.atomic
def agreement_store(
    *, inputs: _Inputs, result: CaseAgreement, version: ModelVersion | None, seconds: float
) -> Agreement:
    case = (
        Case.objects.select_for_update(of=("self",), no_key=True)
        .select_related("project")
        .get(pk=inputs.case.pk)
    )
    done = Agreement.objects.filter(case=case, inputs_key=inputs.key).first()
    if done is not None:  # a concurrent delivery stored it first
        return done
    consensus = _consensus_revision(case, result.consensus)
    model = result.model_vs_consensus
    agreement = Agreement.objects.create(
        project_id=case.project_id,
        case=case,
        inputs_key=inputs.key,
        reader_annotation_ids=[a.pk for a in inputs.readers],
        consensus=consensus,
        n_readers=result.n_readers,
        mean_pairwise_dice=result.mean_pairwise_dice,
        mean_pairwise_hd95=result.mean_pairwise_hd95,
        kappa=float(result.kappa),
        kappa_method=result.kappa_method,
        model_version=version,
        model_dice_vs_consensus=model.dice if model is not None else None,
        model_within_spread=result.model_within_reader_range,
        metrics=result.to_dict(),
        seconds=seconds,
    )
    ReaderAgreement.objects.bulk_create(
        [
            ReaderAgreement(
                agreement=agreement,
                project_id=case.project_id,
                reader_id=cast(int, ann.author_id),  # readers come keyed by author (_latest_reader_revisions)
                annotation=ann,
                dice_vs_consensus=stats.dice,
                hd95_vs_consensus=stats.hd95,
                sensitivity=float(result.staple_sensitivity[i]),
                specificity=float(result.staple_specificity[i]),
                time_spent_s=ann.time_spent_s,
                read_at=ann.created_at,
            )
            for i, (ann, stats) in enumerate(zip(inputs.readers, result.readers_vs_consensus, strict=True))
        ]
    )
    audit_record(
        actor=None,
        action="agreement.update",
        project=case.project,
        target=agreement,
        details={
            "case_id": case.pk,
            "reader_annotation_ids": agreement.reader_annotation_ids,
            "consensus_revision": consensus.revision,
        },
    )
    return agreement
