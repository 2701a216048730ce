"""Explanations on request: interactive methods computed in the request and cached, expensive ones queued
on the explain queue through the outbox, architecture-specific ones refused for the wrong network; the
pipeline precomputes expensive methods for the head of the queue only."""

import pytest

from annotations.models import Role
from hitl.core import task_names
from hitl.core.models import OutboxMessage
from hitl.core.storage import bytes_load
from tests.workers.test_training_helpers import make_version, seed_project
from workers.ml.explain.explanations import map_from_png
from workers.models import Explanation, VersionState
from workers.selectors.registry import case_ml_payload
from workers.services import scoring
from workers.services.explain_on_demand import EXPLAIN_TASK
from workers.services.proposals import explanations_compute


@pytest.fixture
def pool(project, member):
    return seed_project(project, member(Role.ML_ENGINEER), n_train=0, n_val=0, n_test=0, n_pool=2)["pool"]


@pytest.fixture
def ml_client(client_for, member):
    return client_for(member(Role.ML_ENGINEER))


@pytest.fixture
def in_web(settings):
    """Interactive methods computed by the web process itself (HITL_EXPLAIN_IN_WEB)."""
    settings.HITL_EXPLAIN_IN_WEB = True


def _ask(client, case, method):
    return client.post(f"/api/v1/cases/{case.pk}/explanations", {"method": method}, format="json")


def test_without_a_model_the_request_conflicts(ml_client, pool):
    r = _ask(ml_client, pool[0], "gradcam")
    assert r.status_code == 409 and r.json()["error"]["code"] == "no_model"


def test_interactive_method_is_computed_now_and_then_cached(in_web, ml_client, project, pool):
    version = make_version(project, number=1, state=VersionState.ACTIVE)
    r = _ask(ml_client, pool[0], "uncertainty")
    assert r.status_code == 201, r.content
    body = r.json()
    assert body["status"] == "computed" and body["interactive"] is True
    row = Explanation.objects.get(case=pool[0], model_version=version, method="uncertainty")
    assert body["explanation"]["id"] == row.pk and body["explanation"]["stale"] is False
    heat = map_from_png(bytes_load(row.map_path))
    assert heat.shape == (32, 32) and 0 <= heat.min() <= heat.max() <= 1 and row.cost_forward_units > 0
    again = _ask(ml_client, pool[0], "uncertainty")
    assert again.status_code == 200 and again.json()["status"] == "ready"
    assert again.json()["explanation"]["id"] == row.pk
    assert Explanation.objects.filter(case=pool[0], method="uncertainty").count() == 1
    assert not OutboxMessage.objects.exists()  # nothing was queued for an interactive method


def test_by_default_an_interactive_method_goes_to_a_worker_and_is_queued_when_none_answers(
    ml_client, project, pool, settings
):
    """Default (HITL_EXPLAIN_IN_WEB off): the web process enqueues the method for a worker; with no answer
    within HITL_EXPLAIN_WAIT_SECONDS the reader gets 202 and the page polls for the map."""
    settings.HITL_EXPLAIN_WAIT_SECONDS = 0
    version = make_version(project, number=1, state=VersionState.ACTIVE)
    r = _ask(ml_client, pool[0], "uncertainty")
    assert r.status_code == 202 and r.json()["status"] == "queued" and r.json()["interactive"] is True
    message = OutboxMessage.objects.get(task=EXPLAIN_TASK)
    assert message.kwargs == {"version_id": version.pk, "case_ids": [pool[0].pk], "methods": ["uncertainty"]}
    assert message.queue == "interactive"  # the reader waits: never behind training or a report
    assert not Explanation.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_by_default_the_reader_gets_the_map_a_worker_made_while_the_request_waited(ml_client, project, pool):
    """Real commits (on_commit fires), the task run by Celery (eager here, a worker in production): the
    request waits for the row and answers 201 with the map."""
    version = make_version(project, number=1, state=VersionState.ACTIVE)
    r = _ask(ml_client, pool[0], "uncertainty")
    assert r.status_code == 201, r.content
    row = Explanation.objects.get(case=pool[0], model_version=version, method="uncertainty")
    assert r.json()["explanation"]["id"] == row.pk and r.json()["status"] == "computed"
    assert OutboxMessage.objects.get(task=EXPLAIN_TASK).sent_at is not None


def test_expensive_method_is_queued_then_ready(ml_client, project, pool):
    version = make_version(project, number=1, state=VersionState.ACTIVE)
    r = _ask(ml_client, pool[0], "lime")
    assert r.status_code == 202 and r.json() == {
        "status": "queued",
        "method": "lime",
        "interactive": False,
        "explanation": None,
    }
    assert not Explanation.objects.filter(case=pool[0], method="lime").exists()
    message = OutboxMessage.objects.get()
    assert message.task == EXPLAIN_TASK and message.queue == ""  # expensive: the batch lane's explain queue
    assert message.kwargs == {"version_id": version.pk, "case_ids": [pool[0].pk], "methods": ["lime"]}
    assert explanations_compute(**message.kwargs) == 1  # what the explain worker does with it
    ready = _ask(ml_client, pool[0], "lime")
    assert ready.status_code == 200 and ready.json()["explanation"]["interactive"] is False
    catalogue = {m["method"]: m for m in case_ml_payload(pool[0])["explain_catalogue"]}
    assert catalogue["lime"]["available"] is True and catalogue["gradcam"]["available"] is False


def test_attention_needs_the_attention_network(ml_client, project, pool):
    make_version(project, number=1, state=VersionState.ACTIVE)
    r = _ask(ml_client, pool[0], "attention")
    assert (
        r.status_code == 409 and r.json()["error"]["code"] == "method_unavailable"
    )  # this model, not this request
    assert "attention" in r.json()["error"]["message"]
    assert "attention" not in {m["method"] for m in case_ml_payload(pool[0])["explain_catalogue"]}


def test_attention_maps_for_an_attention_unet_project(in_web, ml_client, project, pool):
    make_version(project, number=1, state=VersionState.ACTIVE, arch="attention_unet")
    r = _ask(ml_client, pool[0], "attention")
    assert r.status_code == 201, r.content
    assert r.json()["explanation"]["method"] == "attention"
    payload = case_ml_payload(pool[0])
    assert [x["method"] for x in payload["explanations"]] == ["attention"]
    catalogue = {m["method"]: m for m in payload["explain_catalogue"]}
    assert catalogue["attention"] == {
        "method": "attention",
        "nominal_cost": 1.0,
        "interactive": True,
        "available": True,
    }


@pytest.mark.parametrize("body", [{}, {"method": ""}, {"method": "no_such_method"}, {"method": "x" * 40}])
def test_bad_method_is_a_400(ml_client, project, pool, body):
    make_version(project, number=1, state=VersionState.ACTIVE)
    r = ml_client.post(f"/api/v1/cases/{pool[0].pk}/explanations", body, format="json")
    assert r.status_code == 400
    assert not Explanation.objects.exists() and not OutboxMessage.objects.exists()


def test_who_may_ask(client_for, member, project, other_project, pool):
    make_version(project, number=1, state=VersionState.ACTIVE)
    annotator = member(Role.ANNOTATOR)
    r = _ask(client_for(annotator), pool[0], "gradcam")
    assert r.status_code == 404  # readers read blind: a case the queue did not give them does not exist
    from tests.factories import MembershipFactory, UserFactory

    outsider = UserFactory()
    MembershipFactory(project=other_project, user=outsider, role=Role.ADMIN)
    assert _ask(client_for(outsider), pool[0], "gradcam").status_code == 404
    assert not Explanation.objects.exists()


@pytest.mark.django_db  # the follow-ups are outbox rows
def test_pipeline_precomputes_expensive_methods_for_the_queue_head_only(monkeypatch):
    sent_all = []
    monkeypatch.setattr(
        scoring, "outbox_enqueue", lambda task, kwargs, queue="": sent_all.append((task, kwargs, queue))
    )
    ids = list(range(1, scoring.HEAD_SIZE + 6))
    scoring._enqueue_followups(7, ids, ["gradcam", "lime", "saliency"])
    calls = [kw for task, kw, _q in sent_all if task == task_names.EXPLANATION_COMPUTE]
    proposals = [(kw["case_ids"], q) for task, kw, q in sent_all if task == task_names.PROPOSAL_COMPUTE]
    # the head's proposals on the interactive lane (readers wait for them), the rest on the batch lane
    assert proposals == [(ids[: scoring.HEAD_SIZE], "interactive"), (ids[scoring.HEAD_SIZE :], "")]
    assert calls[0] == {
        "version_id": 7,
        "case_ids": ids[: scoring.HEAD_SIZE],
        "methods": ["gradcam", "saliency", "lime"],
    }
    assert [c["methods"] for c in calls[1:]] == [["gradcam", "saliency"]]
    assert [i for c in calls for i in c["case_ids"]] == ids


def test_explanations_compute_refuses_methods_the_network_cannot_use(project, pool):
    version = make_version(project, number=1, state=VersionState.ACTIVE)
    with pytest.raises(ValueError, match="attention"):
        explanations_compute(version_id=version.pk, case_ids=[pool[0].pk], methods=["attention"])
    assert not Explanation.objects.exists()


def test_a_backend_without_gradient_explanations_gets_only_the_gradient_free_methods(
    project, pool, monkeypatch
):
    """The interface's declared capability: a backend whose models give no gradients (none of today's three)
    is offered occlusion and the other output-only methods, and a gradient method is refused."""
    import dataclasses

    from workers.ml import backends

    builtin = backends.BACKENDS["builtin"]
    no_gradients = dataclasses.replace(builtin.capabilities, gradient_explanations=False)
    monkeypatch.setattr(type(builtin), "capabilities", no_gradients)
    version = make_version(project, number=1, state=VersionState.ACTIVE)
    with pytest.raises(ValueError, match="gradcam"):
        explanations_compute(version_id=version.pk, case_ids=[pool[0].pk], methods=["gradcam", "occlusion"])
    assert not Explanation.objects.exists()
    assert explanations_compute(version_id=version.pk, case_ids=[pool[0].pk], methods=["uncertainty"]) == 1
