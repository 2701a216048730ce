"""Adjudication: an admin adopts one revision of a multi-read case as `adjudicated`; it becomes the current
mask, every label policy trains on it and consensus exports pick it; nobody else may adjudicate."""

import numpy as np
import pytest

from annotations.models import Annotation, AnnotationKind, LabelPolicy, Role
from hitl.core.models import AuditEvent
from hitl.core.storage import bytes_load, mask_from_png
from tests.annotations.test_agreement import _three_readers
from workers.models import ExportLabels
from workers.selectors.exports import export_revision_ids
from workers.services.agreement import agreement_update
from workers.services.datasets import training_sets_build


@pytest.mark.django_db
def test_an_admin_adjudicates_and_training_and_exports_use_the_decision(project, member, client_for):
    case, readers, masks, anns = _three_readers(project)
    agreement = agreement_update(case_id=case.pk)
    consensus = agreement.consensus
    odd_one = anns[2]  # the reader the consensus out-voted
    for role in (Role.ANNOTATOR, Role.ML_ENGINEER, Role.DATA_MANAGER):
        resp = client_for(member(role)).post(
            f"/api/v1/cases/{case.pk}/adjudicate", {"revision": odd_one.revision}, format="json"
        )
        assert resp.status_code in (403, 404), role
    admin_user = member(Role.ADMIN)
    admin = client_for(admin_user)
    for bad in (99, consensus.revision + 1):
        resp = admin.post(f"/api/v1/cases/{case.pk}/adjudicate", {"revision": bad}, format="json")
        assert resp.status_code == 409 and resp.json()["error"]["code"] == "no_such_revision"
    assert admin.post(f"/api/v1/cases/{case.pk}/adjudicate", {}, format="json").status_code == 400
    assert not Annotation.objects.filter(kind=AnnotationKind.ADJUDICATED).exists()

    resp = admin.post(f"/api/v1/cases/{case.pk}/adjudicate", {"revision": odd_one.revision}, format="json")
    assert resp.status_code == 201, resp.content
    settled = Annotation.objects.get(pk=resp.json()["id"])
    assert (
        settled.kind == AnnotationKind.ADJUDICATED
        and settled.base == odd_one
        and settled.author == admin_user
    )
    assert np.array_equal(mask_from_png(bytes_load(settled.mask_path)), masks[2])
    case.refresh_from_db()
    assert case.current_annotation == settled
    assert AuditEvent.objects.filter(action="case.adjudicate", target_id=str(settled.pk)).exists()
    for policy in LabelPolicy.values:  # every policy trains on the decision, not on the vote
        sets = training_sets_build(project=project, label_policy=policy)
        assert sets.train.revision_ids == [settled.pk], policy
        assert np.array_equal(sets.train.masks[0], masks[2]), policy
    picked = export_revision_ids(project=project, labels=ExportLabels.CONSENSUS)
    assert picked == [settled.pk] and consensus.pk not in picked
