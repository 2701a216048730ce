"""Three readers, one case, everything through the API on PostgreSQL + Redis + a real worker: the agreement
task stores an agreement row, a consensus revision and per-reader numbers, and the next training run trains
on the consensus (the run records the policy and the revisions)."""

import base64

import numpy as np
import pytest
from rest_framework.test import APIClient

from annotations.models import Annotation, AnnotationKind, Role
from tests.factories import MembershipFactory, TrainingSettingsFactory, UserFactory
from tests.helpers import png_bytes
from tests.integration.conftest import wait_until
from tests.workers.test_training_helpers import SPEC, TINY, seed_project

pytestmark = pytest.mark.django_db(transaction=True)


def _client(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def _disc(cy: int, cx: int, r: int) -> np.ndarray:
    yy, xx = np.mgrid[: SPEC.size[0], : SPEC.size[1]]
    mask = np.zeros(SPEC.size, np.uint8)
    mask[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = 1
    return mask


def _agreement(client, case_id):
    resp = client.get(f"/api/v1/cases/{case_id}/agreement")
    return resp.json() if resp.status_code == 200 and resp.json()["n_readers"] == 3 else None


def test_three_readers_agreement_consensus_and_training_on_it(celery_worker):
    project = TrainingSettingsFactory(
        project__readers_per_case=3, training_config=TINY, gating_tolerance=1.0
    ).project
    ml_user = UserFactory(username="ml-agree")
    MembershipFactory(project=project, user=ml_user, role=Role.ML_ENGINEER)
    readers = [UserFactory(username=f"agree-reader-{i}") for i in range(3)]
    for user in readers:
        MembershipFactory(project=project, user=user, role=Role.ANNOTATOR)
    seeded = seed_project(project, ml_user, n_train=3, n_val=1, n_test=1, n_pool=1)
    case_id = seeded["pool"][0].pk
    masks = [_disc(16, 16, 8), _disc(16, 17, 8), _disc(17, 20, 7)]  # three different readings

    for user, mask in zip(readers, masks, strict=True):
        client = _client(user)
        claim = client.post(f"/api/v1/projects/{project.pk}/queue/claim").json()
        assert claim["case"] == case_id
        body = {
            "mask": {"format": "png_base64", "data": base64.b64encode(png_bytes(mask)).decode()},
            "base_revision": None,  # blind reading: each reader starts from nothing
            "time_spent_s": 30.0,
            "proposal_model_version": None,
        }
        resp = client.post(f"/api/v1/cases/{case_id}/annotations", body, format="json")
        assert resp.status_code == 201, resp.content

    ml = _client(ml_user)
    agreement = wait_until(lambda: _agreement(ml, case_id), timeout=60)
    assert agreement["kappa_method"] == "fleiss" and 0.5 < agreement["mean_pairwise_dice"] < 1.0
    assert len(agreement["pairs"]) == 3 and all(p["hd95"] > 0 for p in agreement["pairs"])
    assert [r["reader"] for r in agreement["readers"]] == [u.username for u in readers]
    assert all(0 < r["dice_vs_consensus"] <= 1 and 0 < r["sensitivity"] <= 1 for r in agreement["readers"])
    consensus = Annotation.objects.get(pk=agreement["consensus_annotation_id"])
    assert consensus.kind == AnnotationKind.CONSENSUS and consensus.author_id is None
    # revisions continue per case (a 2-reader consensus may have come between the 2nd and 3rd reading)
    revisions = list(
        Annotation.objects.filter(case_id=case_id).order_by("revision").values_list("revision", flat=True)
    )
    assert revisions == list(range(1, len(revisions) + 1)) and len(revisions) in (4, 5)
    assert consensus.revision == agreement["consensus_revision"] == revisions[-1]
    # an annotator sees only their own numbers
    own = _client(readers[0]).get(f"/api/v1/cases/{case_id}/agreement").json()
    assert [r["reader"] for r in own["readers"]] == [readers[0].username]
    stats = ml.get(f"/api/v1/projects/{project.pk}/agreement").json()
    assert stats["project"]["cases_with_agreement"] == 1 and len(stats["readers"]) == 3

    # the next training run trains on the consensus
    run = ml.post(f"/api/v1/projects/{project.pk}/training-runs", {}, format="json").json()
    done = wait_until(
        lambda: (
            (r := ml.get(f"/api/v1/training-runs/{run['id']}").json())["status"] in ("succeeded", "failed")
            and r
        ),
        timeout=120,
    )
    assert done["status"] == "succeeded", done.get("outcome")
    assert done["label_policy"] == "consensus"
    reader_revisions = set(
        Annotation.objects.filter(case_id=case_id, kind=AnnotationKind.READER).values_list("id", flat=True)
    )
    assert consensus.pk in done["revision_ids"] and not reader_revisions & set(done["revision_ids"])
