"""A claimed case without the active version's proposal gets one on the interactive lane."""

from annotations.models import Role
from hitl.core import task_names
from hitl.core.lanes import INTERACTIVE
from hitl.core.models import OutboxMessage
from tests.workers.test_training_helpers import make_version, seed_project
from workers.models import Prediction, VersionState
from workers.selectors.registry import proposal_missing
from workers.services.proposals import proposals_compute


def _asked() -> list[tuple[str, list[int]]]:
    rows = OutboxMessage.objects.filter(task=task_names.PROPOSAL_COMPUTE).order_by("id")
    return [(m.queue, m.kwargs["case_ids"]) for m in rows]


def _claim(client, project) -> int:
    resp = client.post(f"/api/v1/projects/{project.pk}/queue/claim")
    assert resp.status_code == 200, resp.content
    return resp.json()["case"]


def test_a_claim_asks_for_the_missing_proposal_on_the_interactive_lane_once(
    project, member, client_for, django_capture_on_commit_callbacks
):
    pool = seed_project(project, member(Role.ML_ENGINEER), n_train=0, n_val=0, n_test=0, n_pool=2)["pool"]
    version = make_version(project, number=1, state=VersionState.ACTIVE)
    assert proposal_missing(project_id=project.pk, case_id=pool[0].pk) == version.pk
    reader = client_for(member(Role.ANNOTATOR))
    with django_capture_on_commit_callbacks(execute=True):  # the message is sent: in tests, run in-process
        case_id = _claim(reader, project)
    assert _asked() == [(INTERACTIVE, [case_id])]
    assert Prediction.objects.filter(case_id=case_id, model_version=version).exists()
    assert proposal_missing(project_id=project.pk, case_id=case_id) is None
    assert _claim(reader, project) == case_id  # the same lease again: it has its proposal now
    assert len(_asked()) == 1


def test_no_request_with_a_proposal_or_without_a_model(project, member, client_for):
    pool = seed_project(project, member(Role.ML_ENGINEER), n_train=0, n_val=0, n_test=0, n_pool=2)["pool"]
    _claim(client_for(member(Role.ANNOTATOR)), project)  # no active version yet
    assert _asked() == []
    version = make_version(project, number=1, state=VersionState.ACTIVE)
    proposals_compute(version_id=version.pk, case_ids=[c.pk for c in pool])
    _claim(client_for(member(Role.ANNOTATOR)), project)
    assert _asked() == []


def test_a_claim_in_a_slab_project_asks_for_the_whole_slabs_missing_proposals_at_once(
    project, pool, member, client_for, django_capture_on_commit_callbacks
):
    """Slabs of 3 slices (selectors.units): the first claim of a slab asks for the proposals of all its
    slices in one task, so the reader's next slices open with theirs."""
    from annotations.services.projects import unit_priorities_refresh

    project.unit_slices = 3
    project.save(update_fields=["unit_slices"])
    unit_priorities_refresh(project=project)  # slab [3, 5] first: its slices score highest
    version = make_version(project, number=1, state=VersionState.ACTIVE)
    proposals_compute(version_id=version.pk, case_ids=[pool[3].pk])  # one slice of the slab has its proposal
    reader = client_for(member(Role.ANNOTATOR))
    with django_capture_on_commit_callbacks(execute=True):
        case_id = _claim(reader, project)
    slab = [c.pk for c in pool if c.slice_index in (3, 4, 5)]
    assert case_id in slab and _asked() == [(INTERACTIVE, sorted(set(slab) - {pool[3].pk}))]
    assert Prediction.objects.filter(model_version=version, case_id__in=slab).count() == 3
