"""The editor payload: pixels, proposal, uncertainty, explanations with stale flags, why the case was chosen."""

from datetime import timedelta

import numpy as np
import pytest
from django.utils import timezone

from annotations.models import Assignment, Role
from annotations.services.queue import case_claim_next
from hitl.core.storage import bytes_save, mask_to_png
from tests.annotations.test_queue import H, W, _mask, _submit
from workers.models import Explanation, ModelVersion, Prediction


def _version(project, number, state):
    return ModelVersion.objects.create(
        project=project, number=number, state=state, weights_path="w", weights_sha256="0"
    )


@pytest.fixture
def claimed(project, pool, member, client_for):
    reader = member(Role.ANNOTATOR)
    assignment = case_claim_next(project=project, reader=reader)
    return reader, client_for(reader), assignment.case_id


@pytest.mark.django_db
def test_payload_and_pixels_for_the_reader(project, claimed):
    reader, client, case_id = claimed
    body = client.get(f"/api/v1/cases/{case_id}/editor").json()
    assert body["case"]["shape"] == [H, W] and body["case"]["channels"] == 1
    assert body["lease"]["slot"] == 0 and body["head_revision"] is None
    assert body["why"]["strategy"] == "entropy" and body["proposal"] is None and body["explanations"] == []
    assert [c["value"] for c in body["label_classes"]] == [1, 2]
    pixels = client.get(body["case"]["pixels_url"])
    assert pixels["X-Shape"] == f"{H},{W}"
    arr = np.frombuffer(pixels.content, dtype=np.dtype(pixels["X-Dtype"]).newbyteorder("<")).reshape(H, W)
    assert np.isfinite(arr).all() and arr.std() > 0


@pytest.mark.django_db
def test_proposal_uncertainty_and_stale_explanations(project, claimed):
    _, client, case_id = claimed
    old, new = _version(project, 1, "retired"), _version(project, 2, "active")
    proposal = _mask(2)
    Prediction.objects.create(
        case_id=case_id,
        model_version=new,
        mask_path=bytes_save("p.png", mask_to_png(proposal)),
        uncertainty_path=bytes_save("u.png", mask_to_png(np.full((H, W), 128, np.uint8))),
    )
    for version in (old, new):
        Explanation.objects.create(
            case_id=case_id,
            model_version=version,
            method="gradcam",
            map_path=bytes_save("e.png", mask_to_png(proposal * 100)),
            cost_forward_units=2.5,
            seconds=0.01,
        )
    body = client.get(f"/api/v1/cases/{case_id}/editor").json()
    assert body["model_version"]["number"] == 2 and body["proposal"]["model_version"] == 2
    assert {(e["model_version"], e["stale"]) for e in body["explanations"]} == {(1, True), (2, False)}
    assert not any(k.endswith("_path") for e in body["explanations"] for k in e)
    from hitl.core.storage import mask_from_png

    np.testing.assert_array_equal(mask_from_png(client.get(body["proposal"]["mask_url"]).content), proposal)
    assert client.get(body["uncertainty_url"]).status_code == 200
    assert client.get(body["explanations"][0]["map_url"]).status_code == 200


@pytest.mark.django_db
def test_blind_reading(project, claimed, member, client_for):
    reader, client, case_id = claimed
    assert _submit(client, case_id, _mask()).status_code == 201
    own = client.get(f"/api/v1/cases/{case_id}/editor").json()
    assert own["head_revision"] == 1 and client.get(own["head_mask_url"]).status_code == 200
    assert client.get(f"/api/v1/cases/{case_id}").status_code == 200
    assert client.get(f"/api/v1/cases/{case_id}/thumbnail.png").status_code == 200
    listed = client.get(f"/api/v1/projects/{project.pk}/cases").json()["results"]
    assert [c["id"] for c in listed] == [case_id]  # their case, and only theirs
    (image,) = client.get(f"/api/v1/projects/{project.pk}/images").json()["results"]
    assert image["id"] == listed[0]["image"]
    stranger = client_for(member(Role.ANNOTATOR))
    assert stranger.get(f"/api/v1/cases/{case_id}/editor").status_code == 404
    assert stranger.get(own["head_mask_url"]).status_code == 404
    assert stranger.get(f"/api/v1/cases/{case_id}").status_code == 404  # not given to them: not there
    assert stranger.get(f"/api/v1/cases/{case_id}/thumbnail.png").status_code == 404
    assert stranger.get(f"/api/v1/projects/{project.pk}/cases").json()["results"] == []
    assert stranger.get(f"/api/v1/projects/{project.pk}/images").json()["results"] == []
    ml = client_for(member(Role.ML_ENGINEER))
    assert ml.get(f"/api/v1/cases/{case_id}/editor").status_code == 200
    assert ml.get(own["head_mask_url"]).status_code == 200


@pytest.mark.django_db
def test_reader_may_fetch_the_revision_they_build_on(project, pool, member, client_for):
    """One reader per case: the head can be someone else's revision (here a colleague's earlier read of a
    case handed out again); the editor points at it and the reader must be able to load it."""
    first, second = member(Role.ANNOTATOR), member(Role.ANNOTATOR)
    case_id = case_claim_next(project=project, reader=first).case_id
    assert _submit(client_for(first), case_id, _mask()).status_code == 201
    now = timezone.now()
    Assignment.objects.create(
        project=project,
        case_id=case_id,
        reader=second,
        slot=1,
        status="active",
        claimed_at=now,
        expires_at=now + timedelta(minutes=5),
    )
    payload = client_for(second).get(f"/api/v1/cases/{case_id}/editor").json()
    assert payload["head_revision"] == 1
    assert client_for(second).get(payload["head_mask_url"]).status_code == 200
    outsider = member(Role.ANNOTATOR)
    assert client_for(outsider).get(payload["head_mask_url"]).status_code == 404
