"""Flagged and skipped cases for data managers: the readers' reasons, and a flagged case returned to the
reading queue (readers then get it again); annotators and ML engineers cannot."""

import pytest

from annotations.models import Case, Role
from annotations.services.queue import case_claim_next
from hitl.core.models import AuditEvent


@pytest.mark.django_db
def test_a_data_manager_sees_reasons_and_returns_a_flagged_case_to_the_queue(
    project, pool, member, client_for
):
    first, second = member(Role.ANNOTATOR, username="ann1"), member(Role.ANNOTATOR, username="ann2")
    a1, a2 = client_for(first), client_for(second)
    flagged = a1.post(f"/api/v1/projects/{project.pk}/queue/claim").json()["case"]
    assert (
        a1.post(f"/api/v1/cases/{flagged}/flag", {"reason": "wrong anatomy"}, format="json").status_code
        == 200
    )
    skipped = a2.post(f"/api/v1/projects/{project.pk}/queue/claim").json()["case"]
    assert (
        a2.post(f"/api/v1/cases/{skipped}/skip", {"reason": "too blurry"}, format="json").status_code == 200
    )

    dm = client_for(member(Role.DATA_MANAGER))
    data = dm.get(f"/api/v1/projects/{project.pk}/flagged-skipped").json()
    assert [(r["case"], r["reader"], r["reason"]) for r in data["flagged"]] == [
        (flagged, "ann1", "wrong anatomy")
    ]
    assert [(r["case"], r["reader"], r["reason"]) for r in data["skipped"]] == [
        (skipped, "ann2", "too blurry")
    ]
    for role in (Role.ANNOTATOR, Role.ML_ENGINEER):
        other = client_for(member(role))
        assert other.get(f"/api/v1/projects/{project.pk}/flagged-skipped").status_code in (403, 404)
        assert other.post(f"/api/v1/cases/{flagged}/return-to-queue").status_code in (403, 404)
    assert Case.objects.get(pk=flagged).flagged_at is not None

    resp = dm.post(f"/api/v1/cases/{flagged}/return-to-queue")
    assert resp.status_code == 200 and resp.json() == {"case": flagged, "flagged": False}
    assert dm.get(f"/api/v1/projects/{project.pk}/flagged-skipped").json()["flagged"] == []
    again = dm.post(f"/api/v1/cases/{flagged}/return-to-queue")
    assert again.status_code == 409 and again.json()["error"]["code"] == "not_flagged"
    assert AuditEvent.objects.filter(action="case.return_to_queue", target_id=str(flagged)).count() == 1
    # back in the queue (highest priority): the next new reader gets it; the flagger never reads it again
    assert case_claim_next(project=project, reader=member(Role.ANNOTATOR, username="ann3")).case_id == flagged
