"""The Exports panel of the data page in a real browser: create, watch, download and check the hash."""

import hashlib
import io
import zipfile

import pytest

from annotations.models import CaseSplit, Role
from tests.e2e.helpers import server_idle
from tests.workers.test_training_helpers import seed_project
from workers.models import ExportFormat, ExportJob, ExportStatus

pytestmark = pytest.mark.e2e


def _create_holding_the_request(page, project_id: int) -> None:
    """Click "Create export" and check the button stays disabled while the POST is in flight."""
    held = []
    url = f"**/api/v1/projects/{project_id}/exports"
    page.route(url, lambda route: held.append(route) if route.request.method == "POST" else route.continue_())
    page.click("#export-create")
    while not held:
        page.wait_for_timeout(20)
    assert page.locator("#export-create").is_disabled()
    held[0].continue_()
    page.unroute(url)


def test_data_manager_creates_watches_and_downloads_an_export(page, login, project, member, artifacts):
    dm = member(Role.DATA_MANAGER, username="dm")
    seed_project(project, dm, n_train=2, n_val=1, n_test=1, n_pool=1)

    login(page, "dm")
    page.goto(f"/projects/{project.pk}/data/")
    page.wait_for_selector("#exports >> text=No exports yet.")
    # the pool holds no labelled case: the API refuses and the page shows its message and code
    page.expect_failures(409, f"/projects/{project.pk}/exports")
    page.check("input[name=format][value=png]")
    page.check("input[name=split][value=pool]")
    page.click("#export-create")
    page.wait_for_selector("#notice:has-text('no mask revision matches this request [nothing_to_export]')")
    with server_idle():
        assert not ExportJob.objects.exists()

    page.uncheck("input[name=split][value=pool]")
    page.check("input[name=split][value=train]")
    page.check("input[name=format][value=coco]")
    page.select_option("#export-labels", "latest")
    _create_holding_the_request(page, project.pk)
    page.wait_for_selector("#exports tr[data-status=queued] progress")  # the POST answers before it ran
    page.wait_for_selector("#exports tr[data-status=succeeded]", timeout=60_000)  # the poll saw it finish
    assert page.locator("#notice").is_hidden() and page.locator("#export-create").is_enabled()

    with server_idle():  # the panel's poll may still be in flight
        job = ExportJob.objects.get(project=project)
    assert job.status == ExportStatus.SUCCEEDED, job.error
    assert (job.params["formats"], job.params["splits"], job.params["labels"]) == (
        ["coco", "png"],
        ["train"],
        "latest",
    )
    assert len(job.params["revision_ids"]) == 2  # the two labelled train cases
    row = page.locator(f"#exports tr[data-job='{job.pk}']")
    cells = row.locator("td").all_inner_texts()
    assert cells[0] == str(job.pk) and cells[2:6] == ["coco, png", "latest", "2", "succeeded"]
    assert row.locator("progress").count() == 0 and cells[8] != "—"  # finished; it has an expiry

    link = row.locator("a:has-text('Download')")
    detail = page.request.get(f"/api/v1/exports/{job.pk}").json()
    assert link.get_attribute("href") == detail["download_url"] == f"/api/v1/exports/{job.pk}/download"
    shown = row.locator("td.sha")
    assert shown.inner_text() == f"{job.sha256[:12]}…"
    sha = shown.get_attribute("title")
    resp = page.request.get(link.get_attribute("href"))
    assert resp.ok and resp.headers["content-type"] == "application/zip"
    data = resp.body()
    assert data[:2] == b"PK" and len(data) == job.size_bytes
    assert hashlib.sha256(data).hexdigest() == sha == job.sha256
    assert {"manifest.json", "masks/coco.json"} <= set(zipfile.ZipFile(io.BytesIO(data)).namelist())
    page.screenshot(path=str(artifacts / "data-exports.png"), full_page=True)


@pytest.mark.parametrize("role", [Role.ANNOTATOR, Role.ML_ENGINEER])
def test_without_the_export_role_the_form_is_disabled_and_nothing_is_asked(
    page, login, project, member, role
):
    user = member(role, username="someone")
    seed_project(project, user, n_train=1, n_val=0, n_test=0, n_pool=0)
    calls: list[str] = []
    page.on("request", lambda req: calls.append(req.url) if "/exports" in req.url else None)

    login(page, "someone")
    page.goto(f"/projects/{project.pk}/data/")
    page.wait_for_selector("#exports-status:has-text('Exports need the data manager or admin role')")
    controls = page.locator("#export-form input, #export-form select, #export-form button")
    assert controls.count() == len(ExportFormat.values) + len(CaseSplit.values) + 2  # + labels, button
    assert all(controls.nth(i).is_disabled() for i in range(controls.count()))
    assert page.locator("#exports").is_hidden()
    page.locator("#export-create").click(force=True)  # a disabled button submits nothing
    page.wait_for_timeout(300)
    with server_idle():
        assert calls == [] and not ExportJob.objects.exists()
