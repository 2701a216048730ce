"""Leases an editor can always recover from: a lease belongs to the tab that claimed it (another tab of the
same reader opens read-only until it takes over; closing it never releases the case), and a reader whose
lease lapsed re-claims the same case while it has a free slot."""

import base64
from datetime import timedelta

import pytest
from django.utils import timezone

from annotations.models import Annotation, Assignment, AssignmentStatus, Case, Role
from annotations.services.queue import case_claim_next, leases_expire
from hitl.core.models import AuditEvent
from tests.annotations.test_queue import _mask, _submit
from tests.helpers import png_bytes

A, B = {"HTTP_X_EDITOR_TAB": "tab-a"}, {"HTTP_X_EDITOR_TAB": "tab-b"}


@pytest.fixture
def reader(member):
    return member(Role.ANNOTATOR)


def _claim(client, project, tab=None):
    return client.post(f"/api/v1/projects/{project.pk}/queue/claim", **(tab or {}))


def _lease(client, case_id, action, tab=None):
    return client.post(f"/api/v1/cases/{case_id}/lease/{action}", **(tab or {}))


def _code(resp):
    return resp.json()["error"]["code"]


@pytest.mark.django_db
def test_a_second_tab_sees_the_case_held_elsewhere_until_it_takes_it_over(project, pool, reader, client_for):
    client = client_for(reader)
    first = _claim(client, project, A).json()
    assert first["held_elsewhere"] is False
    second = _claim(client, project, B).json()
    assert second["id"] == first["id"] and second["held_elsewhere"] is True
    case_id = first["case"]
    for action in ("heartbeat", "release"):  # closing the read-only tab never releases the case
        resp = _lease(client, case_id, action, B)
        assert resp.status_code == 409 and _code(resp) == "lease_moved"
    resp = client.post(f"/api/v1/cases/{case_id}/skip", {"reason": "x"}, format="json", **B)
    assert _code(resp) == "lease_moved"
    body = {
        "mask": {"format": "png_base64", "data": base64.b64encode(png_bytes(_mask())).decode()},
        "base_revision": None,
        "time_spent_s": 1,
    }
    resp = client.post(f"/api/v1/cases/{case_id}/annotations", body, format="json", **B)
    assert resp.status_code == 409 and _code(resp) == "lease_moved" and not Annotation.objects.exists()
    assert Assignment.objects.get().status == AssignmentStatus.ACTIVE
    taken = _lease(client, case_id, "take-over", B)
    assert taken.status_code == 200 and taken.json()["held_elsewhere"] is False
    assert _code(_lease(client, case_id, "heartbeat", A)) == "lease_moved"  # tab A turns read-only
    assert _lease(client, case_id, "heartbeat", B).status_code == 200
    assert _lease(client, case_id, "heartbeat").status_code == 200  # an API client sends no tab: unaffected
    assert AuditEvent.objects.filter(action="case.take_over").count() == 1
    assert _lease(client, case_id, "release", B).status_code == 200
    assert Assignment.objects.get().status == AssignmentStatus.RELEASED


@pytest.mark.django_db
def test_take_over_needs_a_tab_and_a_malformed_tab_is_refused(project, pool, reader, client_for):
    client = client_for(reader)
    case_id = _claim(client, project, A).json()["case"]
    resp = _lease(client, case_id, "take-over")
    assert resp.status_code == 409 and _code(resp) == "tab_required"
    resp = _claim(client, project, {"HTTP_X_EDITOR_TAB": "a b/c"})
    assert resp.status_code == 400
    for bad in ("x" * 65, ""):
        assert _claim(client, project, {"HTTP_X_EDITOR_TAB": bad}).status_code == 400


@pytest.mark.django_db
def test_a_lapsed_lease_is_reclaimed_on_the_same_case_and_the_mask_saves(project, pool, reader, client_for):
    client = client_for(reader)
    case_id = _claim(client, project, A).json()["case"]
    Assignment.objects.update(
        claimed_at=timezone.now() - timedelta(hours=1), expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert leases_expire() == 1 and Case.objects.get(pk=case_id).reads_taken == 0
    assert _code(_submit(client, case_id, _mask())) == "no_lease"
    again = _lease(client, case_id, "reclaim", A)
    assert again.status_code == 200, again.content
    assert again.json()["case"] == case_id and again.json()["held_elsewhere"] is False
    assert _lease(client, case_id, "reclaim", A).json()["id"] == again.json()["id"]  # idempotent
    assert _submit(client, case_id, _mask()).status_code == 201
    case = Case.objects.get(pk=case_id)
    assert case.reads_taken == 1 and case.current_annotation.revision == 1
    assert AuditEvent.objects.filter(action="case.reclaim").count() == 1
    resp = _lease(client, case_id, "reclaim", A)  # submitted: nothing left to reclaim
    assert resp.status_code == 409 and _code(resp) == "already_read"


@pytest.mark.django_db
def test_reclaim_refuses_a_case_another_reader_now_holds(project, pool, reader, member, client_for):
    client = client_for(reader)
    case_id = _claim(client, project, A).json()["case"]
    _lease(client, case_id, "release", A)
    other = case_claim_next(project=project, reader=member(Role.ANNOTATOR))
    assert other.case_id == case_id  # the highest priority case went to the next reader
    resp = _lease(client, case_id, "reclaim", A)
    assert resp.status_code == 409 and _code(resp) == "case_taken"
    mine = _claim(client, project, A).json()  # a lease on another case blocks reclaiming one
    Assignment.objects.filter(pk=other.pk).update(status=AssignmentStatus.RELEASED)
    Case.objects.filter(pk=case_id).update(reads_taken=0, slots_mask=0)
    resp = _lease(client, case_id, "reclaim", A)
    assert _code(resp) == "lease_elsewhere" and str(mine["case"]) in resp.json()["error"]["message"]


@pytest.mark.django_db
def test_reclaim_refuses_a_flagged_case_and_non_members(
    project, pool, reader, member, client_for, other_project
):
    client = client_for(reader)
    case_id = _claim(client, project, A).json()["case"]
    _lease(client, case_id, "release", A)
    Case.objects.filter(pk=case_id).update(flagged_at=timezone.now())
    assert _code(_lease(client, case_id, "reclaim", A)) == "case_closed"
    outsider = client_for(member(Role.ANNOTATOR, username="outsider"))
    Assignment.objects.all().delete()
    from tests.factories import MembershipFactory, UserFactory

    stranger = UserFactory(username="stranger")
    MembershipFactory(project=other_project, user=stranger, role=Role.ANNOTATOR)
    assert _lease(client_for(stranger), case_id, "reclaim", A).status_code == 404
    Case.objects.filter(pk=case_id).update(flagged_at=None)
    resp = outsider.post(f"/api/v1/cases/{case_id}/lease/reclaim")  # a member the queue never gave it
    assert resp.status_code == 409 and _code(resp) == "never_held"  # no way around the queue's order


@pytest.mark.django_db
def test_a_reader_lists_their_submitted_cases_and_revises_one_without_a_lease(
    project, pool, reader, member, client_for
):
    client = client_for(reader)
    case_id = _claim(client, project).json()["case"]
    assert _submit(client, case_id, _mask(1)).status_code == 201
    mine = client.get(f"/api/v1/projects/{project.pk}/my-cases").json()
    assert [(r["case"], r["my_latest_revision"], r["flagged"]) for r in mine] == [(case_id, 1, False)]
    body = {
        "mask": {"format": "png_base64", "data": base64.b64encode(png_bytes(_mask(2))).decode()},
        "base_revision": 1,
        "time_spent_s": 3,
    }
    resp = client.post(f"/api/v1/cases/{case_id}/revisions", body, format="json")
    assert resp.status_code == 201, resp.content
    assert resp.json()["revision"] == 2 and resp.json()["base"] is not None
    case = Case.objects.get(pk=case_id)
    assert case.current_annotation.revision == 2 and case.reads_taken == 1  # no second slot taken
    assert AuditEvent.objects.filter(action="annotation.revise").count() == 1
    stale = client.post(f"/api/v1/cases/{case_id}/revisions", body, format="json")  # still on revision 1
    assert stale.status_code == 409 and _code(stale) == "stale_base"
    assert client.get(f"/api/v1/projects/{project.pk}/my-cases").json()[0]["my_latest_revision"] == 2
    other = client_for(member(Role.ANNOTATOR, username="other"))
    resp = other.post(f"/api/v1/cases/{case_id}/revisions", body, format="json")
    assert resp.status_code in (404, 409) and Annotation.objects.filter(case_id=case_id).count() == 2
    Case.objects.filter(pk=case_id).update(flagged_at=timezone.now())
    body["base_revision"] = 2
    resp = client.post(f"/api/v1/cases/{case_id}/revisions", body, format="json")
    assert resp.status_code == 409 and _code(resp) == "case_closed"
    assert client.get(f"/api/v1/projects/{project.pk}/my-cases?limit=0").status_code == 400
