"""Reader queue and submissions: ordering, slots, leases, skip/flag, optimistic concurrency, effort."""

import base64
from datetime import timedelta

import numpy as np
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from annotations.models import Annotation, Assignment, Case, Role
from annotations.services.masks import rle_encode
from annotations.services.queue import QueueError, case_claim_next, leases_expire
from hitl.core.models import AuditEvent, OutboxMessage
from hitl.core.storage import bytes_save, mask_to_png
from tests.annotations.conftest import H, S, W
from tests.factories import MembershipFactory, TrainingSettingsFactory, UserFactory
from tests.helpers import png_bytes
from workers.models import ModelVersion, Prediction


@pytest.fixture
def reader(member):
    return member(Role.ANNOTATOR)


def _mask(value=1):
    m = np.zeros((H, W), np.uint8)
    m[2:6, 3:7] = value
    return m


def _submit(client, case_id, mask, base=None, t=12.5, version=None):
    body = {
        "mask": {"format": "png_base64", "data": base64.b64encode(png_bytes(mask)).decode()},
        "base_revision": base,
        "time_spent_s": t,
        "proposal_model_version": version,
    }
    return client.post(f"/api/v1/cases/{case_id}/annotations", body, format="json")


@pytest.mark.django_db
def test_claim_follows_priority_and_is_idempotent(project, pool, reader, client_for):
    client = client_for(reader)
    first = client.post(f"/api/v1/projects/{project.pk}/queue/claim").json()
    assert first["case"] == pool[-1].pk and first["queue_reason"]["strategy"] == "entropy"
    again = client.post(f"/api/v1/projects/{project.pk}/queue/claim").json()
    assert again["id"] == first["id"]
    other_user = UserFactory(username="r2")
    MembershipFactory(project=project, user=other_user, role=Role.ANNOTATOR)
    assert (
        client_for(other_user).post(f"/api/v1/projects/{project.pk}/queue/claim").json()["case"]
        == pool[-2].pk
    )


@pytest.mark.django_db
def test_multi_reader_slots_and_never_twice(project, pool, member):
    project.readers_per_case = 2
    project.save()
    readers = [member(Role.ANNOTATOR) for _ in range(3)]
    claims = [case_claim_next(project=project, reader=r) for r in readers]
    assert [c.case_id for c in claims] == [pool[-1].pk, pool[-1].pk, pool[-2].pk]
    assert [c.slot for c in claims] == [0, 1, 0]
    case = Case.objects.get(pk=pool[-1].pk)
    assert case.reads_taken == 2 and case.slots_mask == 0b11


@pytest.mark.django_db
def test_skip_frees_slot_but_not_for_the_same_reader(project, pool, reader, member, client_for):
    client = client_for(reader)
    case_id = client.post(f"/api/v1/projects/{project.pk}/queue/claim").json()["case"]
    assert client.post(f"/api/v1/cases/{case_id}/skip", {"reason": ""}, format="json").status_code == 400
    assert (
        client.post(f"/api/v1/cases/{case_id}/skip", {"reason": "motion artefact"}, format="json").status_code
        == 200
    )
    assert client.post(f"/api/v1/projects/{project.pk}/queue/claim").json()["case"] != case_id
    assert case_claim_next(project=project, reader=member(Role.ANNOTATOR)).case_id == case_id


@pytest.mark.django_db
def test_flag_removes_case_from_queue(project, pool, reader, member, client_for):
    client = client_for(reader)
    case_id = client.post(f"/api/v1/projects/{project.pk}/queue/claim").json()["case"]
    resp = client.post(f"/api/v1/cases/{case_id}/flag", {"reason": "image unreadable"}, format="json")
    assert resp.status_code == 200 and Case.objects.get(pk=case_id).flagged_at is not None
    others = [case_claim_next(project=project, reader=member(Role.ANNOTATOR)).case_id for _ in range(S - 1)]
    assert case_id not in others
    assert case_claim_next(project=project, reader=member(Role.ANNOTATOR)) is None


@pytest.mark.django_db
def test_expired_lease_returns_case_and_refuses_submission(project, pool, reader, client_for):
    client = client_for(reader)
    case_id = client.post(f"/api/v1/projects/{project.pk}/queue/claim").json()["case"]
    Assignment.objects.update(
        claimed_at=timezone.now() - timedelta(hours=1), expires_at=timezone.now() - timedelta(seconds=1)
    )
    resp = _submit(client, case_id, _mask())
    assert resp.status_code == 409 and resp.json()["error"]["code"] == "lease_expired"
    assert leases_expire() == 1
    case = Case.objects.get(pk=case_id)
    assert case.reads_taken == 0 and case.slots_mask == 0 and Annotation.objects.count() == 0


@pytest.mark.django_db
def test_submit_creates_revision_and_409_on_stale_base(project, pool, reader, client_for):
    client = client_for(reader)
    case_id = client.post(f"/api/v1/projects/{project.pk}/queue/claim").json()["case"]
    resp = _submit(client, case_id, _mask())
    assert resp.status_code == 201, resp.content
    body = resp.json()
    assert body["revision"] == 1 and body["base"] is None and body["time_spent_s"] == 12.5
    assert set(body) == {
        "id", "case", "revision", "kind", "author", "base", "label_counts", "time_spent_s",
        "proposal_model_version", "effort_dice", "pixels_changed", "created_at",
    }  # fmt: skip
    assert (body["case"], body["author"], body["kind"]) == (case_id, reader.pk, "reader")
    assert body["proposal_model_version"] is None and body["label_counts"] == {"0": H * W - 16, "1": 16}
    assert Case.objects.get(pk=case_id).current_annotation_id == body["id"]
    assert AuditEvent.objects.filter(action="annotation.submit").count() == 1
    # automatic retraining is off in this project: no retraining check is queued for the submission
    assert not OutboxMessage.objects.filter(task="workers.tasks.training.training_auto_check").exists()
    # a second submission needs a lease again; with a fresh lease but a stale base it is a 409
    late_user = UserFactory(username="late")
    MembershipFactory(project=project, user=late_user, role=Role.ANNOTATOR)
    Assignment.objects.create(
        project=project,
        case_id=case_id,
        reader=late_user,
        slot=1,
        status="active",
        claimed_at=timezone.now(),
        expires_at=timezone.now() + timedelta(minutes=5),
    )
    late = client_for(late_user)
    stale = _submit(late, case_id, _mask(2), base=None)
    assert stale.status_code == 409
    assert (
        stale.json()["error"]["code"] == "stale_base"
        and stale.json()["error"]["details"]["current_revision"] == 1
    )
    ok = _submit(late, case_id, _mask(2), base=1)
    assert ok.status_code == 201 and ok.json()["revision"] == 2 and ok.json()["base"] == body["id"]
    assert Annotation.objects.get(revision=1).mask_sha256  # nothing overwritten


@pytest.mark.django_db
@pytest.mark.parametrize(
    "mask,code",
    [
        (np.zeros((H + 1, W), np.uint8), "mask_shape_mismatch"),
        (np.full((H, W), 7, np.uint8), "mask_labels_invalid"),
    ],
)
def test_submit_rejects_bad_masks(project, pool, reader, client_for, mask, code):
    client = client_for(reader)
    case_id = client.post(f"/api/v1/projects/{project.pk}/queue/claim").json()["case"]
    resp = _submit(client, case_id, mask)
    assert resp.status_code == 400 and resp.json()["error"]["code"] == code
    assert Annotation.objects.count() == 0


@pytest.mark.django_db
def test_rle_submission_and_correction_effort(project, pool, reader, client_for):
    client = client_for(reader)
    case_id = client.post(f"/api/v1/projects/{project.pk}/queue/claim").json()["case"]
    version = ModelVersion.objects.create(
        project=project, number=1, state="active", weights_path="w", weights_sha256="0"
    )
    proposal = np.zeros((H, W), np.uint8)
    proposal[2:6, 3:9] = 1  # 24 px; the reader keeps 16 of them
    Prediction.objects.create(
        case_id=case_id, model_version=version, mask_path=bytes_save("p.png", mask_to_png(proposal))
    )
    body = {
        "mask": rle_encode(_mask()),
        "base_revision": None,
        "time_spent_s": 3,
        "proposal_model_version": version.pk,
    }
    resp = client.post(f"/api/v1/cases/{case_id}/annotations", body, format="json")
    assert resp.status_code == 201, resp.content
    assert resp.json()["effort_dice"] == pytest.approx(2 * 16 / (24 + 16))
    assert resp.json()["pixels_changed"] == 8 and resp.json()["proposal_model_version"] == version.pk


@pytest.mark.django_db
def test_claim_permissions(project, pool, member, client_for, other_project):
    dm = client_for(member(Role.DATA_MANAGER))
    assert dm.post(f"/api/v1/projects/{project.pk}/queue/claim").status_code == 403
    outsider = UserFactory(username="outsider")
    MembershipFactory(project=other_project, user=outsider, role=Role.ANNOTATOR)
    assert client_for(outsider).post(f"/api/v1/projects/{project.pk}/queue/claim").status_code == 404


@pytest.mark.django_db
def test_claim_query_count_is_pinned(project, pool, member):
    """At most 5 statements per claim on SQLite (the target): 4 for the claim and, since claims are
    audited, the audit row; on PostgreSQL the whole claim, audit row included, is one statement
    (test_claim_postgres). SAVEPOINTs are the test transaction's, not the claim's."""
    reader = member(Role.ANNOTATOR)
    with CaptureQueriesContext(connection) as ctx:
        assignment = case_claim_next(project=project, reader=reader)
    statements = [q["sql"] for q in ctx.captured_queries if "SAVEPOINT" not in q["sql"]]
    assert assignment is not None
    assert len(statements) <= 5, statements
    assert sum("annotations_auditevent" in sql for sql in statements) == 1


def test_forged_mask_sizes_are_refused_before_decoding():
    from annotations.services.masks import MaskError, mask_decode

    huge_rle = {"format": "rle", "size": [100000, 100000], "values": [0], "lengths": [10**10]}
    with pytest.raises(MaskError) as err:
        mask_decode(huge_rle, shape=(H, W))
    assert err.value.code == "mask_shape_mismatch"
    big_png = {
        "format": "png_base64",
        "data": base64.b64encode(png_bytes(np.zeros((H, W + 1), np.uint8))).decode(),
    }
    with pytest.raises(MaskError) as err:
        mask_decode(big_png, shape=(H, W))
    assert err.value.code == "mask_shape_mismatch"
    with pytest.raises(MaskError) as err:
        mask_decode({"format": "png_base64", "data": "!!"}, shape=(H, W))
    assert err.value.code == "invalid_mask"


@pytest.mark.django_db
def test_submission_queues_the_retraining_check_when_auto_retraining_is_on(project, pool, reader, client_for):
    TrainingSettingsFactory(project=project, auto_retrain_every=5)
    client = client_for(reader)
    case_id = client.post(f"/api/v1/projects/{project.pk}/queue/claim").json()["case"]
    assert _submit(client, case_id, _mask()).status_code == 201
    message = OutboxMessage.objects.get(task="workers.tasks.training.training_auto_check")
    assert message.kwargs == {"project_id": project.pk}


@pytest.mark.django_db
def test_a_claim_that_a_constraint_refuses_is_a_conflict(project, pool, member):
    """Whatever slips past the claim's own checks (here: a slot held although the case's bitmask says it is
    free), the database constraints refuse it, and the reader gets a "conflict" to retry, on both paths."""
    top = pool[-1]  # the pool's priorities follow the slice index
    Assignment.objects.create(
        project=project,
        case=top,
        reader=member(Role.ANNOTATOR),
        slot=0,
        status="submitted",
        claimed_at=timezone.now(),
        expires_at=timezone.now() + timedelta(minutes=5),
    )
    with pytest.raises(QueueError) as err:
        case_claim_next(project=project, reader=member(Role.ANNOTATOR))
    assert err.value.code == "conflict"
