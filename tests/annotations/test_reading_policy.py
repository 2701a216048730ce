"""Reading policy: the seeded multi-read share, uncertainty routing, and the queue honouring per-case readers."""

import numpy as np
import pytest

from annotations.models import Case, Image, Role
from annotations.selectors.editor import visible_head
from annotations.selectors.reading_policy import routing_pick, share_draw
from annotations.services.queue import case_claim_next
from annotations.services.reading_policy import reading_policy_apply
from tests.factories import TrainingSettingsFactory
from tests.workers.test_training_helpers import make_version, seed_project
from workers.models import CaseScore, VersionState
from workers.services.queue_order import QueueEntry, queue_priorities_set, reading_policy_route
from workers.services.scoring import scoring_run

pytestmark = pytest.mark.django_db


def _cases(project, user, n: int) -> list[Case]:
    image = Image.objects.create(
        project=project,
        display_name="volume",
        source_kind="nifti",
        modality="CT",
        pixels_path="unused.npy",
        shape=[n, 4, 4],
        dtype="float32",
        spacing=[1.0, 1.0, 1.0],
        content_hash="x" * 64,
        status="ready",
        created_by=user,
    )
    Case.objects.bulk_create([Case(project=project, image=image, slice_index=i) for i in range(n)])
    return list(Case.objects.filter(project=project).order_by("id"))


def test_share_of_multi_read_cases_over_1000_cases_with_a_fixed_seed(project, member):
    project.multi_read_share, project.multi_read_readers, project.reading_seed = 0.2, 3, 12345
    project.save()
    cases = _cases(project, member(Role.DATA_MANAGER), 1000)
    queue_priorities_set(project=project, entries=[])  # cases enter the queue: the share is decided
    required = dict(Case.objects.filter(project=project).values_list("id", "readers_required"))
    multi = [pk for pk, r in required.items() if r == 3]
    assert set(required.values()) == {0, 3}
    assert abs(len(multi) / 1000 - 0.2) <= 0.03, len(multi)  # binomial sd is 0.0126: a 2.4 sd tolerance
    # the same seed picks the same cases, whatever the batch; another seed picks others
    expected = {c.pk for c in cases if share_draw(seed=12345, case_id=c.pk) < 0.2}
    assert set(multi) == expected
    other = {c.pk for c in cases if share_draw(seed=1, case_id=c.pk) < 0.2}
    assert other != expected and abs(len(other) / 1000 - 0.2) <= 0.03
    # applying again changes nothing (decisions only go up, and these are made)
    assert reading_policy_apply(project=project) == 0


def test_share_leaves_cases_already_being_read_alone(project, member):
    cases = _cases(project, member(Role.DATA_MANAGER), 50)
    Case.objects.filter(pk__in=[c.pk for c in cases[:25]]).update(reads_taken=1)
    project.multi_read_share = 1.0
    project.save()
    assert reading_policy_apply(project=project) == 25
    assert set(Case.objects.filter(reads_taken=1).values_list("readers_required", flat=True)) == {0}
    assert set(Case.objects.filter(reads_taken=0).values_list("readers_required", flat=True)) == {3}


def test_routing_pick_known_answer():
    ids = [10, 11, 12, 13, 14, 15, 16, 17, 18, 19]
    unc = [0.1, 0.9, 0.3, 0.8, 0.5, 0.2, 0.7, 0.6, 0.4, 0.0]
    assert routing_pick(case_ids=ids, uncertainty=unc, share=0.3) == [11, 13, 16]
    assert routing_pick(case_ids=ids, uncertainty=unc, share=0.25) == [11, 13, 16]  # ceil(2.5)
    assert routing_pick(case_ids=ids, uncertainty=unc, share=0.0) == []
    assert routing_pick(case_ids=ids, uncertainty=unc, share=1.0) == sorted(ids, key=lambda i: -unc[i - 10])
    assert routing_pick(case_ids=[3, 1, 2], uncertainty=[0.5, 0.5, 0.1], share=0.5) == [1, 3]  # ties: id


def test_routing_sends_exactly_the_top_q_cases_to_k_readers(project, member):
    project.routing_share, project.routing_readers = 0.1, 3
    project.save()
    cases = _cases(project, member(Role.DATA_MANAGER), 50)
    rng = np.random.default_rng(0)
    uncertainty = rng.permutation(50) / 50.0
    routed = reading_policy_route(
        project=project, case_ids=[c.pk for c in cases], uncertainty=list(uncertainty)
    )
    top5 = {cases[i].pk for i in np.argsort(-uncertainty)[:5]}
    assert set(routed) == top5
    required = dict(Case.objects.filter(project=project).values_list("id", "readers_required"))
    assert {pk for pk, r in required.items() if r == 3} == top5
    assert {pk for pk, r in required.items() if r == 0} == {c.pk for c in cases} - top5
    # the queue now gives each routed case to three readers, the others to one
    queue_priorities_set(
        project=project, entries=[QueueEntry(c.pk, float(uncertainty[i]), {}) for i, c in enumerate(cases)]
    )
    first = cases[int(np.argmax(uncertainty))].pk
    readers = [member(Role.ANNOTATOR) for _ in range(4)]
    claims = [case_claim_next(project=project, reader=r) for r in readers]
    assert [c.case_id for c in claims[:3]] == [first] * 3 and [c.slot for c in claims[:3]] == [0, 1, 2]
    assert claims[3].case_id != first
    case = Case.objects.get(pk=first)
    assert case.reads_taken == 3 and case.slots_mask == 0b111
    # blind reading on the routed case even though the project reads once: no one sees another's head
    assert visible_head(case=case, reader=readers[1]) is None


def test_scoring_routes_the_most_uncertain_share(project, member):
    project.routing_share, project.routing_readers = 0.25, 2
    project.save()
    TrainingSettingsFactory(project=project, query_strategy="entropy")
    pool = seed_project(project, member(Role.ML_ENGINEER), n_train=0, n_val=0, n_test=0, n_pool=8)["pool"]
    version = make_version(project, number=1, state=VersionState.ACTIVE)
    assert scoring_run(project_id=project.pk, version_id=version.pk) == len(pool)
    top = list(
        CaseScore.objects.filter(model_version=version)
        .order_by("-score", "case_id")
        .values_list("case_id", flat=True)
    )[:2]
    routed = set(Case.objects.filter(project=project, readers_required=2).values_list("id", flat=True))
    assert routed == set(top)
