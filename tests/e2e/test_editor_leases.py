"""Readers never lose work to a lease (issue 17): a second tab opens read-only and can take the case over;
a lapsed lease is re-claimed on submit and the mask on screen is saved; a case another reader took keeps
the mask on screen and downloadable; closing the tab or Release gives the case back; a failed open offers
a retry. Each test checks the saved revision against the mask on screen."""

import json
import time

import numpy as np
import pytest
from django.utils import timezone

from annotations.models import Annotation, Assignment, AssignmentStatus, Role
from annotations.services.masks import mask_decode
from annotations.services.queue import case_claim_next, leases_expire
from hitl.core.storage import bytes_load, mask_from_png
from tests.e2e.helpers import drag, editor_state, reading_world, server_idle, unexpected, wait_ready, watch

pytestmark = pytest.mark.e2e


@pytest.fixture
def world(project, member):
    return reading_world(project, member)


@pytest.fixture
def reader(member):
    return member(Role.ANNOTATOR, username="reader1")


def _open(page, login, project):
    login(page, "reader1")
    page.goto(f"/projects/{project.pk}/annotate/")
    wait_ready(page)


def _saved(case_id, reader) -> np.ndarray:
    with server_idle():
        annotation = Annotation.objects.get(case_id=case_id, author=reader)
        return mask_from_png(bytes_load(annotation.mask_path))


def _lapse(case_id) -> None:
    """The lease runs out behind the page (the periodic expiry returns the slot to the queue)."""
    with server_idle():
        past = timezone.now() - timezone.timedelta(seconds=1)
        Assignment.objects.filter(case_id=case_id).update(claimed_at=past, expires_at=past)
        assert leases_expire() == 1


def _status(case_id, reader) -> str:
    with server_idle():
        return Assignment.objects.filter(case_id=case_id, reader=reader).latest("claimed_at").status


def test_a_second_tab_opens_read_only_and_takes_the_case_over(page, login, project, world, reader):
    _open(page, login, project)
    drag(page, [(6.5, 8.5), (24.5, 8.5)])
    mine_a = editor_state(page)
    second = page.context.new_page()
    watch(second)
    second.goto(f"/projects/{project.pk}/annotate/")
    second.wait_for_selector("#editor[data-state=readonly]")
    assert editor_state(second)["case"] == mine_a["case"]
    assert (
        second.locator("#lease").inner_text() == "read-only" and second.locator("#btn-submit").is_disabled()
    )
    before = editor_state(second)["mask"]
    drag(second, [(6.5, 20.5), (24.5, 20.5)])  # read-only: painting does nothing
    assert np.array_equal(editor_state(second)["mask"], before)

    second.click("#btn-take-over")
    wait_ready(second)
    drag(second, [(6.5, 24.5), (24.5, 24.5)])
    mine_b = editor_state(second)
    page.expect_failures(409, f"/cases/{mine_a['case']}/annotations")  # lease_moved
    page.click("#btn-submit")  # tab A no longer holds the case: it turns read-only, its mask kept
    page.wait_for_selector("#editor[data-state=readonly]")
    assert np.array_equal(editor_state(page)["mask"], mine_a["mask"])
    with server_idle():
        assert not Annotation.objects.filter(case_id=mine_a["case"]).exists()
    second.click("#btn-submit")
    wait_ready(second, other_than=mine_b["case"])
    assert np.array_equal(_saved(mine_b["case"], reader), mine_b["mask"])
    second.close()
    assert not unexpected(second), unexpected(second)


def test_a_lapsed_lease_is_reclaimed_and_the_mask_on_screen_is_saved(page, login, project, world, reader):
    _open(page, login, project)
    drag(page, [(6.5, 8.5), (24.5, 8.5)])
    mine = editor_state(page)
    _lapse(mine["case"])
    page.expect_failures(409, f"/cases/{mine['case']}/annotations")  # no_lease
    page.click("#btn-submit")  # 409 no_lease -> the editor re-claims the same case and submits again
    wait_ready(page, other_than=mine["case"])
    assert np.array_equal(_saved(mine["case"], reader), mine["mask"])
    with server_idle():
        leases = Assignment.objects.filter(case_id=mine["case"], reader=reader).order_by("claimed_at")
        assert [a.status for a in leases] == [AssignmentStatus.EXPIRED, AssignmentStatus.SUBMITTED]


def test_a_case_another_reader_took_keeps_the_mask_on_screen_and_downloadable(
    page, login, project, world, reader, member
):
    _open(page, login, project)
    drag(page, [(6.5, 8.5), (24.5, 8.5)])
    mine = editor_state(page)
    _lapse(mine["case"])
    with server_idle():
        other = case_claim_next(project=project, reader=member(Role.ANNOTATOR, username="reader2"))
    assert other.case_id == mine["case"]
    page.expect_failures(409, f"/cases/{mine['case']}/annotations")  # no_lease
    page.expect_failures(409, f"/cases/{mine['case']}/lease/reclaim")  # case_taken
    page.click("#btn-submit")
    page.wait_for_selector("#editor[data-state=lost]")
    assert "Another reader now holds this case" in page.locator("#notice").inner_text()
    assert np.array_equal(editor_state(page)["mask"], mine["mask"])
    with page.expect_download() as download:
        page.click("#btn-download-mask")
    body = json.loads(open(download.value.path()).read())
    assert body["case"] == mine["case"]
    assert np.array_equal(mask_decode(body["mask"], shape=mine["mask"].shape), mine["mask"])
    page.click("#btn-next-case")
    wait_ready(page, other_than=mine["case"])


def test_closing_the_tab_or_release_gives_the_case_back(page, login, project, world, reader):
    _open(page, login, project)
    first = editor_state(page)["case"]
    page.click("#btn-release")
    page.wait_for_selector("#editor[data-state=released]")
    assert _status(first, reader) == AssignmentStatus.RELEASED
    page.click("#btn-next-case")
    wait_ready(page)
    case = editor_state(page)["case"]
    tab = page.context.new_page()  # a second, read-only tab: closing it releases nothing
    tab.goto(f"/projects/{project.pk}/annotate/")
    tab.wait_for_selector("#editor[data-state=readonly]")
    tab.close()
    time.sleep(0.5)
    assert _status(case, reader) == AssignmentStatus.ACTIVE
    page.close()  # the holder tab: pagehide releases the case at once
    deadline = time.monotonic() + 10
    while _status(case, reader) != AssignmentStatus.RELEASED and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _status(case, reader) == AssignmentStatus.RELEASED


def test_a_failed_open_offers_a_retry_that_opens_the_case(page, login, project, world, reader):
    failures = {"left": 1}

    def once_500(route):
        if failures["left"]:
            failures["left"] -= 1
            route.fulfill(status=500, content_type="application/json", body='{"error": {"code": "error"}}')
        else:
            route.continue_()

    page.route("**/api/v1/cases/*/editor", once_500)
    page.expect_failures(500, "/editor")
    login(page, "reader1")
    page.goto(f"/projects/{project.pk}/annotate/")
    page.wait_for_selector("#editor[data-state=error]")
    page.click("#btn-try-again")
    wait_ready(page)
    assert editor_state(page)["case"] is not None


def test_a_reader_reopens_a_submitted_case_and_saves_a_new_revision(page, login, project, world, reader):
    _open(page, login, project)
    first = editor_state(page)
    page.click("#btn-submit")
    wait_ready(page, other_than=first["case"])
    queued = editor_state(page)["case"]
    page.click(f"#recent-{first['case']}")  # "my recent cases": the case just submitted
    page.wait_for_function("(id) => window.hitlEditor.session.caseId === id", arg=first["case"])
    wait_ready(page)
    assert "revising your revision 1" in page.locator("#case-title").inner_text()
    assert page.locator("#btn-skip").is_disabled() and page.locator("#btn-release").is_disabled()
    assert np.array_equal(editor_state(page)["mask"], first["mask"])  # it opens on the reader's revision
    drag(page, [(6.5, 12.5), (24.5, 12.5)])
    revised = editor_state(page)
    page.click("#btn-submit")
    wait_ready(page, other_than=first["case"])  # back to the queue
    with server_idle():  # the queued case was given back while revising, then claimed again
        statuses = list(
            Assignment.objects.filter(case_id=queued, reader=reader)
            .order_by("claimed_at")
            .values_list("status", flat=True)
        )
        assert statuses == [AssignmentStatus.RELEASED, AssignmentStatus.ACTIVE]
        assert editor_state(page)["case"] == queued
        latest = Annotation.objects.filter(case_id=first["case"], author=reader).order_by("-revision").first()
        saved = mask_from_png(bytes_load(latest.mask_path))
    assert latest.revision == 2 and np.array_equal(saved, revised["mask"])
    page.wait_for_selector(f"#recent-{first['case']}:has-text('revision 2')")


def test_promote_and_rollback_with_the_editor_open_replace_the_layers_never_the_mask(
    page, login, project, world, reader
):
    from tests.workers.test_training_helpers import make_version
    from workers.models import Prediction
    from workers.services.proposals import proposals_compute
    from workers.services.registry import model_version_promote, model_version_rollback

    _open(page, login, project)
    drag(page, [(6.5, 8.5), (24.5, 8.5)])
    mine = editor_state(page)
    assert page.locator("#layers").inner_text().count("proposal v1") == 1
    with server_idle():
        v2 = make_version(project, number=2, seed=7)
        model_version_promote(version=v2, actor=world["owner"])
        proposals_compute(version_id=v2.pk, case_ids=[mine["case"]])
    page.evaluate("window.hitlEditor.session.startHeartbeat()")  # the next beat reports v2
    page.wait_for_selector("#notice:has-text('Model v2 is now active')")
    assert "proposal v2" in page.locator("#layers").inner_text()
    why = page.locator("#why").inner_text()
    assert "proposal by\nv2" in why and "active model\nv2" in why and "ranked by\nv1" in why, why
    assert np.array_equal(editor_state(page)["mask"], mine["mask"])  # the reader's work is untouched
    with server_idle():  # "reset to proposal" now uses v2's proposal
        stored = Prediction.objects.get(case_id=mine["case"], model_version=v2).mask_path
        v2_mask = mask_from_png(bytes_load(stored))
    assert np.array_equal(editor_state(page)["proposal"], v2_mask)
    with server_idle():
        model_version_rollback(project=project, actor=world["owner"])
    page.evaluate("window.hitlEditor.session.startHeartbeat()")
    page.wait_for_selector("#notice:has-text('Model v1 is now active')")
    assert (
        "proposal v1" in page.locator("#layers").inner_text()
        and "v2" not in page.locator("#layers").inner_text()
    )
    assert np.array_equal(editor_state(page)["mask"], mine["mask"])
    page.click("#btn-submit")
    wait_ready(page, other_than=mine["case"])
    assert np.array_equal(_saved(mine["case"], reader), mine["mask"])


def test_a_lapsed_lease_and_a_revision_landed_meanwhile_end_in_the_conflict_dialog(
    page, login, project, world, reader
):
    from tests.workers.test_training_helpers import annotate

    _open(page, login, project)
    drag(page, [(6.5, 8.5), (24.5, 8.5)])
    mine = editor_state(page)
    _lapse(mine["case"])
    with server_idle():
        case = project.cases.get(pk=mine["case"])
        theirs = np.zeros_like(mine["mask"])
        theirs[:, :10] = 2
        annotate(case, mask=theirs, user=reader)  # e.g. saved from elsewhere: revision 1 lands
    page.expect_failures(409, f"/cases/{case.pk}/annotations")  # no_lease, then stale_base
    page.click("#btn-submit")  # re-claimed, submitted again: the newer revision is the conflict
    page.wait_for_selector("#btn-conflict-keep")
    assert np.array_equal(editor_state(page)["mask"], mine["mask"])
    page.click("#btn-conflict-keep")
    wait_ready(page, other_than=mine["case"])
    with server_idle():
        latest = case.annotations.order_by("-revision").first()
        assert latest.revision == 2 and latest.base.revision == 1
        assert np.array_equal(mask_from_png(bytes_load(latest.mask_path)), mine["mask"])


@pytest.mark.parametrize("drawn", [False, True])
def test_a_proposal_that_arrives_after_the_case_opened_is_shown_and_never_overwrites_drawing(
    page, login, project, world, reader, monkeypatch, drawn
):
    """A case claimed beyond the queue head opens before the active version proposed for it (the claim
    asks for the proposal on the interactive lane; here nothing computes it until the test does)."""
    from annotations.services import queue
    from workers.models import Prediction
    from workers.services.proposals import proposals_compute

    with server_idle():
        Prediction.objects.filter(model_version=world["version"]).delete()
    asked: list[int] = []
    monkeypatch.setattr(queue, "proposal_soon", lambda *, project, case_id: asked.append(case_id))
    _open(page, login, project)
    opened = editor_state(page)
    assert opened["proposal"] is None and not opened["mask"].any() and asked == [opened["case"]]
    if drawn:
        drag(page, [(6.5, 8.5), (24.5, 8.5)])
    mine = editor_state(page)["mask"]
    with server_idle():
        assert proposals_compute(version_id=world["version"].pk, case_ids=[opened["case"]]) == 1
        stored = Prediction.objects.get(case_id=opened["case"], model_version=world["version"]).mask_path
        proposal = mask_from_png(bytes_load(stored))
    assert proposal.any()  # the untrained network draws something: the two masks can be told apart
    page.wait_for_selector("#notice:has-text('proposal arrived')")
    now = editor_state(page)
    assert np.array_equal(now["proposal"], proposal) and "proposal v1" in page.locator("#layers").inner_text()
    if drawn:  # the reader's drawing stays; Reset to proposal now uses it
        assert np.array_equal(now["mask"], mine) and now["undo"] == 1
        page.click("#btn-reset")
        assert np.array_equal(editor_state(page)["mask"], proposal)
    else:  # nothing drawn yet: the proposal becomes the starting mask, with nothing to undo
        assert np.array_equal(now["mask"], proposal) and now["undo"] == 0
    page.click("#btn-submit")
    wait_ready(page, other_than=opened["case"])
    saved = _saved(opened["case"], reader)
    assert np.array_equal(saved, proposal)
    with server_idle():
        ann = Annotation.objects.get(case_id=opened["case"], author=reader)
    assert ann.proposal_model_version_id == world["version"].pk
