import numpy as np
import pytest

from annotations.models import Role
from hitl.core.storage import bytes_load, mask_from_png
from tests.workers.test_training_helpers import make_version, seed_project
from workers.ml.explain.explanations import map_from_png
from workers.models import Explanation, Prediction, VersionState
from workers.selectors.registry import case_ml_payload, explanations_for_case
from workers.services.proposals import explanations_compute, proposals_compute
from workers.services.registry import model_version_promote
from workers.services.scoring import scoring_run


@pytest.fixture
def pool(project, member):
    return seed_project(project, member(Role.ML_ENGINEER), n_train=0, n_val=0, n_test=0, n_pool=3)["pool"]


def test_proposals_write_mask_and_uncertainty_pngs_once(project, pool):
    version = make_version(project, number=1, state=VersionState.ACTIVE)
    ids = [c.pk for c in pool]
    assert proposals_compute(version_id=version.pk, case_ids=ids) == 3
    assert proposals_compute(version_id=version.pk, case_ids=ids) == 0  # redelivery: nothing new
    p = Prediction.objects.get(case=pool[0], model_version=version)
    mask = mask_from_png(bytes_load(p.mask_path))
    umap = map_from_png(bytes_load(p.uncertainty_path))
    assert mask.shape == umap.shape == (32, 32) and mask.max() < 3 and 0 <= umap.min() <= umap.max() <= 1


def test_work_for_a_version_no_longer_active_is_dropped(project, pool):
    version = make_version(project, number=1, state=VersionState.RETIRED)
    assert proposals_compute(version_id=version.pk, case_ids=[pool[0].pk]) == 0
    assert explanations_compute(version_id=version.pk, case_ids=[pool[0].pk]) == 0


def test_explanations_stay_and_turn_stale_after_a_new_version(project, pool, member, monkeypatch):
    monkeypatch.setattr("workers.services.registry._enqueue_scoring", lambda p, v: None)
    case = pool[0]
    v1 = make_version(project, number=1, state=VersionState.ACTIVE)
    assert explanations_compute(version_id=v1.pk, case_ids=[case.pk]) == 2
    proposals_compute(version_id=v1.pk, case_ids=[case.pk])
    e = Explanation.objects.get(case=case, model_version=v1, method="gradcam")
    heat = map_from_png(bytes_load(e.map_path))
    assert heat.shape == (32, 32) and np.isfinite(heat).all() and e.seconds > 0 and e.cost_forward_units > 0
    assert {x["stale"] for x in explanations_for_case(case)} == {False}

    v2 = make_version(project, number=2, seed=1)
    model_version_promote(version=v2, actor=member(Role.ADMIN))
    stale = explanations_for_case(case)
    assert len(stale) == 2 and {x["stale"] for x in stale} == {True}  # v1's rows stay, marked stale
    payload = case_ml_payload(case)
    assert payload["model_version"]["number"] == 2
    assert payload["proposal"]["stale"] is True and payload["proposal"]["model_version"] == 1

    explanations_compute(version_id=v2.pk, case_ids=[case.pk], methods=["saliency"])
    proposals_compute(version_id=v2.pk, case_ids=[case.pk])
    scoring_run(project_id=project.pk, version_id=v2.pk)
    by_version = {(x["model_version"], x["method"]): x["stale"] for x in explanations_for_case(case)}
    assert by_version == {(2, "saliency"): False, (1, "gradcam"): True, (1, "saliency"): True}
    payload = case_ml_payload(case)
    assert payload["proposal"]["model_version"] == 2 and payload["proposal"]["stale"] is False
    assert payload["uncertainty_path"] == payload["proposal"]["uncertainty_path"]
    assert payload["score"]["rank"] >= 1 and "bald" in payload["score"]["components"]
    assert [x["model_version"] for x in payload["explanations"]] == [2, 1, 1]


def test_case_ml_payload_query_count(project, pool, django_assert_max_num_queries):
    v1 = make_version(project, number=1, state=VersionState.ACTIVE)
    explanations_compute(version_id=v1.pk, case_ids=[pool[0].pk])
    proposals_compute(version_id=v1.pk, case_ids=[pool[0].pk])
    with django_assert_max_num_queries(4):
        payload = case_ml_payload(pool[0])
    assert payload["proposal"]["mask_path"] and len(payload["explanations"]) == 2
    empty = case_ml_payload(pool[1])
    assert empty["proposal"] is None and empty["explanations"] == [] and empty["model_version"]["number"] == 1


def test_layer_urls_name_their_version_so_a_cached_layer_of_another_version_is_never_shown(
    project, pool, member, client_for
):
    from annotations.selectors.editor import editor_payload

    v1 = make_version(project, number=1, state=VersionState.ACTIVE, seed=1)
    proposals_compute(version_id=v1.pk, case_ids=[pool[0].pk])
    v2 = make_version(project, number=2, seed=2)
    owner = member(Role.ADMIN)
    model_version_promote(version=v2, actor=owner)
    proposals_compute(version_id=v2.pk, case_ids=[pool[0].pk])
    payload = editor_payload(case=pool[0], user=owner, roles={Role.ADMIN})
    assert payload["proposal"]["mask_url"].endswith(f"/proposal.png?version={v2.pk}")
    assert payload["uncertainty_url"].endswith(f"/uncertainty.png?version={v2.pk}")
    client = client_for(owner)
    for version in (v1, v2):
        stored = Prediction.objects.get(case=pool[0], model_version=version)
        for layer, path in (("proposal", stored.mask_path), ("uncertainty", stored.uncertainty_path)):
            resp = client.get(f"/api/v1/cases/{pool[0].pk}/{layer}.png?version={version.pk}")
            assert resp.status_code == 200 and resp.content == bytes_load(path), (layer, version.number)
    assert client.get(f"/api/v1/cases/{pool[1].pk}/proposal.png?version={v1.pk}").status_code == 404
    assert client.get(f"/api/v1/cases/{pool[0].pk}/proposal.png?version=abc").status_code == 400
    default = client.get(f"/api/v1/cases/{pool[0].pk}/proposal.png")  # no version: the active one's
    assert default.content == bytes_load(Prediction.objects.get(case=pool[0], model_version=v2).mask_path)
