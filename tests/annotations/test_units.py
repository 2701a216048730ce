"""The unit of work on volumes (issue 19): with slabs (or whole volumes) a reader is given the slices of one
unit one after another, most uncertain first; units are queued by the max or mean of their slices' scores;
a unit one reader started is left to them unless it needs more readers. Runs on SQLite and PostgreSQL."""

import pytest

from annotations.models import Case, Role
from annotations.selectors.units import unit_range, unit_scores
from tests.annotations.test_queue import _mask, _submit
from tests.factories import MembershipFactory, UserFactory
from workers.services.queue_order import QueueEntry, queue_priorities_set

pytestmark = pytest.mark.django_db


@pytest.fixture
def reader(member):
    return member(Role.ANNOTATOR)


def _claim(client, project) -> int | None:
    resp = client.post(f"/api/v1/projects/{project.pk}/queue/claim")
    return resp.json()["case"] if resp.status_code == 200 else None


def _read(client, project) -> int:
    """Claim the next case and submit a mask for it; returns its slice index."""
    case_id = _claim(client, project)
    assert case_id is not None
    assert _submit(client, case_id, _mask()).status_code == 201
    return Case.objects.get(pk=case_id).slice_index


def _units(project, k: int, score: str = "max") -> None:
    from annotations.services.projects import unit_priorities_refresh

    project.unit_slices, project.unit_score = k, score
    project.save(update_fields=["unit_slices", "unit_score"])
    unit_priorities_refresh(project=project)  # what project_update does when these change


def _priorities(project, pool, values) -> None:
    entries = [QueueEntry(c.pk, float(v), {"strategy": "entropy"}) for c, v in zip(pool, values, strict=True)]
    queue_priorities_set(project=project, entries=entries)


def test_a_reader_reads_a_slab_through_most_uncertain_slice_first_then_the_next_slab(
    project, pool, reader, client_for
):
    _units(project, 3)  # slabs [0, 1, 2] and [3, 4, 5]; priorities = slice index
    _priorities(project, pool, [0, 2, 1, 3, 5, 4])
    client = client_for(reader)
    assert [_read(client, project) for _ in range(6)] == [4, 5, 3, 1, 2, 0]
    assert unit_range(project, pool[4]) == (3, 5) and unit_range(project, pool[1]) == (0, 2)


def test_a_started_slab_is_left_to_its_reader_unless_it_needs_more_readers(project, pool, reader, client_for):
    _units(project, 3)
    first = client_for(reader)
    assert _read(first, project) == 5  # the reader starts slab [3, 5]
    other = UserFactory()
    MembershipFactory(project=project, user=other, role=Role.ANNOTATOR)
    second = client_for(other)
    assert _read(second, project) == 2  # slab [0, 2], although slices 4 and 3 score higher
    assert _read(first, project) == 4  # the first reader goes on with their slab
    project.readers_per_case = 2
    project.save(update_fields=["readers_per_case"])
    third = UserFactory()
    MembershipFactory(project=project, user=third, role=Role.ANNOTATOR)
    assert Case.objects.get(pk=_claim(client_for(third), project)).slice_index == 5  # two readers wanted


def test_unit_scores_known_answers():
    rows = [(10 + i, 1, i, p) for i, p in enumerate([8, 0, 4, 2, 2, 2, 1, 9])]  # one volume, 8 slices
    assert unit_scores(rows, 4, "max") == {10: 8, 11: 8, 12: 8, 13: 8, 14: 9, 15: 9, 16: 9, 17: 9}
    assert unit_scores(rows, 4, "mean")[10] == 3.5 and unit_scores(rows, 4, "mean")[17] == 3.5
    assert unit_scores(rows, 4, "topk")[11] == 8 and unit_scores(rows, 4, "topk")[14] == 9  # top 1 of 4
    assert set(unit_scores(rows, 0, "topk").values()) == {8.5}  # whole volume: top 2 of 8
    assert unit_scores([(1, 1, 0, 3.0), (2, 2, 0, 5.0)], 0, "max") == {1: 3.0, 2: 5.0}  # per volume


def test_a_unit_whose_reader_left_goes_back_to_everyone(project, pool, reader, client_for):
    from datetime import timedelta

    from django.utils import timezone

    from annotations.models import Assignment

    _units(project, 3)
    assert _read(client_for(reader), project) == 5
    other = UserFactory()
    MembershipFactory(project=project, user=other, role=Role.ANNOTATOR)
    past = timezone.now() - timedelta(hours=2)  # the first reader stopped two hours ago
    Assignment.objects.filter(reader=reader).update(claimed_at=past, finished_at=past)
    assert _read(client_for(other), project) == 4  # slab [3, 5] is no longer held


def test_changing_the_unit_rescores_the_queue_through_the_api(project, pool, member, client_for):
    _priorities(project, pool, [10, 0, 0, 5, 6, 5])
    dm = client_for(member(Role.DATA_MANAGER))
    resp = dm.patch(f"/api/v1/projects/{project.pk}", {"unit_slices": 3, "unit_score": "mean"}, format="json")
    assert resp.status_code == 200
    assert [
        c.unit_priority for c in Case.objects.filter(pk__in=[p.pk for p in pool]).order_by("slice_index")
    ] == (pytest.approx([10 / 3] * 3 + [16 / 3] * 3))


@pytest.mark.parametrize(("score", "expected"), [("max", 0), ("mean", 4)])
def test_units_are_queued_by_the_max_or_the_mean_of_their_slices(
    project, pool, reader, client_for, score, expected
):
    _units(project, 3, score)
    _priorities(project, pool, [10, 0, 0, 5, 6, 5])  # slab [0, 2]: max 10, mean 3.3; [3, 5]: max 6, mean 5.3
    assert _read(client_for(reader), project) == expected  # the chosen slab's most uncertain slice


def test_a_skip_inside_a_slab_moves_to_its_next_slice(project, pool, reader, client_for):
    _units(project, 3)
    client = client_for(reader)
    case_id = _claim(client, project)
    assert Case.objects.get(pk=case_id).slice_index == 5
    assert (
        client.post(f"/api/v1/cases/{case_id}/skip", {"reason": "motion"}, format="json").status_code == 200
    )
    assert Case.objects.get(pk=_claim(client, project)).slice_index == 4


def test_whole_volume_units(project, pool, reader, client_for):
    _units(project, 0)
    _priorities(project, pool, [0, 9, 1, 3, 2, 4])
    client = client_for(reader)
    assert [_read(client, project) for _ in range(6)] == [1, 5, 3, 4, 2, 0]  # one unit: by priority
    assert unit_range(project, pool[3]) == (0, 5)


def test_the_unit_settings_are_validated_and_data_managers_set_them(project, member, client_for):
    url = f"/api/v1/projects/{project.pk}"
    dm = client_for(member(Role.DATA_MANAGER))
    assert dm.patch(url, {"unit_slices": 65}, format="json").status_code == 400
    assert dm.patch(url, {"unit_score": "median"}, format="json").status_code == 400  # max, mean or topk
    resp = dm.patch(url, {"unit_slices": 5, "unit_score": "mean"}, format="json")
    assert resp.status_code == 200 and (resp.json()["unit_slices"], resp.json()["unit_score"]) == (5, "mean")
    assert client_for(member(Role.ANNOTATOR)).patch(url, {"unit_slices": 1}, format="json").status_code == 403
