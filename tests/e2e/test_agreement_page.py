"""The agreement dashboard with real data in a real browser (Playwright + Debian's Chromium); writes
artifacts/e2e/agreement.png."""

import os

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # Playwright's sync API runs an event loop

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from django.conf import settings  # noqa: E402
from django.test import Client  # noqa: E402

from annotations.models import Role  # noqa: E402
from hitl.core.storage import bytes_save, mask_to_png  # noqa: E402
from tests.e2e.helpers import unexpected, watch  # noqa: E402
from tests.factories import MembershipFactory, ProjectFactory, UserFactory  # noqa: E402
from tests.workers.test_training_helpers import add_case, annotate, make_version  # noqa: E402
from workers.models import Prediction, VersionState  # noqa: E402
from workers.services.agreement import agreement_update  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
ARTIFACT = Path(__file__).resolve().parents[2] / "artifacts" / "e2e" / "agreement.png"
IN_CI = os.environ.get("CI", "").lower() == "true"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = pytest.mark.django_db(transaction=True)


def _sync_playwright():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if IN_CI:
            raise
        pytest.skip("browser test skipped: Playwright for Python is not installed (it runs in CI)")
    if not Path(CHROMIUM).exists():
        if IN_CI:
            pytest.fail(f"{CHROMIUM} is missing in CI")
        pytest.skip(f"browser test skipped: no Chromium at {CHROMIUM} (it runs in CI)")
    return sync_playwright


def _disc(shape, cy, cx, r):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return ((yy - cy) ** 2 + (xx - cx) ** 2 < r * r).astype(np.uint8)


def _data():
    project = ProjectFactory(name="Agreement demo")
    ml = UserFactory(username="e2e-ml")
    MembershipFactory(project=project, user=ml, role=Role.ML_ENGINEER)
    readers = [UserFactory(username=f"e2e-reader-{i}") for i in range(3)]
    version = make_version(project, number=1, state=VersionState.ACTIVE)
    shape = (64, 64)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    image = (np.sin(yy / 6.0) * np.cos(xx / 9.0) * 100).astype(np.float32)
    shifts = [(0, 1, 3), (0, 4, 9), (2, 2, 2), (1, 6, 12)]  # growing disagreement per case
    for n, (a, b, c) in enumerate(shifts):
        case = add_case(project, user=ml, image=image, mask=None, split="pool")
        for user, dx in zip(readers, (a, b, c), strict=True):
            annotate(case, mask=_disc(shape, 32, 30 + dx, 14 - n), user=user)
        path = bytes_save(
            f"projects/{project.pk}/e2e-pred-{case.pk}.png", mask_to_png(_disc(shape, 32, 32, 13))
        )
        Prediction.objects.create(case=case, model_version=version, mask_path=path)
        agreement_update(case_id=case.pk)
    return project, ml


def test_agreement_dashboard_renders_with_real_data(live_server):
    sync_playwright = _sync_playwright()
    project, ml = _data()
    client = Client()
    client.force_login(ml)
    session = client.cookies[settings.SESSION_COOKIE_NAME].value
    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            context.add_cookies(
                [{"name": settings.SESSION_COOKIE_NAME, "value": session, "url": live_server.url}]
            )
            page = context.new_page()
            watch(page)
            external = []
            page.on(
                "request",
                lambda r: (
                    external.append(r.url) if not r.url.startswith((live_server.url, "data:")) else None
                ),
            )
            page.goto(f"{live_server.url}/projects/{project.pk}/")  # reached from the project page
            page.click("text=Reader agreement")
            page.wait_for_load_state("load")
            assert page.url == f"{live_server.url}/projects/{project.pk}/agreement/"
            resp = page.goto(f"{live_server.url}/projects/{project.pk}/agreement/")
            assert resp.status == 200
            assert page.locator("h1").inner_text() == "Inter-observer agreement"
            assert page.locator("svg.plot").count() == 4
            assert page.locator("[data-testid=reader-row]").count() == 3
            assert page.locator("[data-testid=disputed-row]").count() == 4
            assert page.locator("[data-testid=cases-with-agreement]").inner_text() == "4"
            bars = page.locator("svg.plot").first.locator("rect")
            assert bars.count() == 11  # background + 10 histogram bins
            box = page.locator("svg.plot").first.bounding_box()
            assert box["width"] > 300 and box["height"] > 150  # drawn, not collapsed
            page.screenshot(path=str(ARTIFACT), full_page=True)
            # the most disputed case opens side by side: three readers and the consensus, images decoded
            page.locator("[data-testid=disputed-row] a").first.click()
            page.wait_for_load_state("load")
            panels = page.locator("[data-testid=panel] img")
            assert panels.count() == 5  # three readers, the consensus, where they disagree
            assert "Readers disagree" in page.locator("[data-testid=panel]").last.inner_text()
            assert page.locator("button.adopt").count() == 0  # adjudication is for admins
            widths = panels.evaluate_all("imgs => imgs.map(i => i.naturalWidth)")
            assert all(w > 0 for w in widths), widths
            assert not external, external  # nothing from a CDN or elsewhere
            assert not unexpected(page), unexpected(page)  # no console error, no failed request
        finally:
            browser.close()
    assert ARTIFACT.stat().st_size > 10_000


def test_an_admin_zooms_sees_where_readers_disagree_and_adjudicates(page, login, artifacts):
    from annotations.models import Annotation, AnnotationKind
    from tests.e2e.helpers import server_idle
    from workers.services.datasets import training_sets_build

    project, _ml = _data()
    admin = UserFactory(username="e2e-admin")
    MembershipFactory(project=project, user=admin, role=Role.ADMIN)
    case = project.cases.order_by("id").last()  # the most disputed
    login(page, "e2e-admin")
    page.goto(f"/projects/{project.pk}/agreement/cases/{case.pk}/")
    first = page.locator("[data-testid=panel] img").first
    small = first.bounding_box()["width"]
    first.click()
    assert first.bounding_box()["width"] > 2 * small  # zoomed to full resolution
    first.click()
    assert first.bounding_box()["width"] == small
    page.locator("[data-testid=panel] img").last.click()  # the disagreement map, zoomed
    page.screenshot(path=str(artifacts / "agreement-case.png"), full_page=True)
    page.locator("[data-testid=panel] img").last.click()
    disagree = page.locator("[data-testid=panel]").last.inner_text()
    assert "Readers disagree" in disagree and "of the pixels" in disagree
    adopted = int(page.locator("[data-testid=panel]").first.get_attribute("data-revision"))
    page.once("dialog", lambda d: d.accept())
    page.locator("button.adopt").first.click()
    page.wait_for_selector(f"#adjudicated:has-text('adopted revision {adopted}')")
    with server_idle():
        settled = Annotation.objects.get(case=case, kind=AnnotationKind.ADJUDICATED)
        source = Annotation.objects.get(case=case, revision=adopted)
        assert (
            settled.author == admin and settled.base == source and settled.mask_sha256 == source.mask_sha256
        )
        case.refresh_from_db()
        assert case.current_annotation == settled
        sets = training_sets_build(project=project)  # the consensus policy now trains on the decision
        assert settled.pk in sets.train.revision_ids
