"""The ML engineer's and the data manager's pages in a real browser."""

import zipfile

import pytest

from annotations.models import Role
from tests.e2e.helpers import server_idle
from tests.factories import TrainingSettingsFactory
from tests.helpers import png_bytes
from tests.workers.test_training_helpers import TINY, seed_project
from workers.models import ModelVersion, RunStatus, TrainingRun
from workers.selectors.settings import training_settings_for

pytestmark = pytest.mark.e2e


def test_ml_engineer_starts_training_sees_progress_reach_done_and_a_new_version(
    page, login, project, member, artifacts
):
    engineer = member(Role.ML_ENGINEER, username="mleng")
    seed_project(project, engineer)
    TrainingSettingsFactory(project=project, training_config=TINY)

    missing: list[str] = []
    page.on("response", lambda r: missing.append(r.url) if r.status == 404 else None)
    login(page, "mleng")
    page.goto(f"/projects/{project.pk}/ml/")
    page.wait_for_selector("#versions >> text=No model versions yet")
    page.click("#btn-start")  # Celery is eager in tests: the run executes inside the request
    page.wait_for_function(
        "() => document.querySelector('#run-progress').dataset.status === 'succeeded'", timeout=120_000
    )
    assert page.locator("#run-progress").evaluate("el => el.value") == 1
    page.wait_for_selector("#versions tr[data-version='1']")
    row = page.locator("#versions tr[data-version='1']").inner_text()
    with server_idle():  # the page's polls may still be in flight
        version = ModelVersion.objects.get(project=project, number=1)
        run = TrainingRun.objects.get(project=project)
    assert f"{version.metrics['validation_dice']:.3f}" in row and version.state in row
    assert run.status == RunStatus.SUCCEEDED
    assert page.locator("#epoch-log tr").count() == len(run.epochs) >= 1
    assert "produced v1" in page.locator("#run-status").inner_text()
    recipe = page.locator("#run-recipe").inner_text()  # what the run trained, from its recorded config
    assert f"patch {TINY['patch_size']}x{TINY['patch_size']}" in recipe and "from scratch" in recipe, recipe
    assert "2D: one slice per input" in recipe, recipe  # single-image phantoms: nothing to stack
    assert "(MC " in row  # the ECE of the MC-dropout mean beside the softmax's
    page.wait_for_selector("#notice:has-text('produced v1')")  # "Training run started." does not linger
    names = [c["name"] for c in project.label_classes]
    per_class = page.locator("#versions tr[data-version='1'] .per-class").inner_text()
    assert any(n in per_class for n in names), per_class  # validation Dice per class, by label name
    page.wait_for_selector("#curve svg circle")
    with page.expect_download() as download:  # the version leaves the service as a MONAI bundle
        page.click("#versions tr[data-version='1'] a.bundle-download")
    names_in_zip = zipfile.ZipFile(download.value.path()).namelist()
    assert any(n.endswith("/configs/inference.json") for n in names_in_zip), names_in_zip
    assert any(n.endswith("/models/model.pt") for n in names_in_zip), names_in_zip
    page.wait_for_selector("#queue tr td:has-text('v1')")  # the pool was rescored by v1
    history = page.locator(f"#run-history tr[data-run='{run.pk}']")  # the run history, refreshed at the end
    history.wait_for()
    cells = history.locator("td").all_inner_texts()
    assert cells[2] == "succeeded" and cells[5] == str(len(run.revision_ids)) and cells[6] == run.label_policy
    assert (
        f"{run.config['train']['epochs']} epochs" in cells[7]
        and "from scratch" in cells[7]
        and cells[8] == "v1"
    )
    assert page.locator("#loss-curve svg path.series-0").count() == 1  # training loss per epoch
    assert page.locator("#loss-curve svg path.series-1").count() == 1  # validation Dice per epoch

    page.select_option("#query_strategy", "margin")
    page.fill("#auto_retrain_every", "5")
    attention = page.locator("input[name=explain_method][value=attention]")
    assert attention.is_disabled()  # a U-Net has no attention gates
    assert page.input_value("#backend") == "builtin"
    page.select_option("#backend", "nnunet")  # the next run trains nnU-Net v2
    page.select_option("#arch", "attention_unet")
    attention.check()
    page.check("input[name=explain_method][value=lime]")
    page.click("#settings button[type=submit]")
    page.wait_for_selector("#settings-saved:visible")
    with server_idle():
        settings = training_settings_for(project)
    assert (settings.query_strategy, settings.auto_retrain_every) == ("margin", 5)
    assert settings.training_config == {
        **TINY,
        "arch": "attention_unet",
        "backend": "nnunet",
        "explain_methods": ["attention", "gradcam", "saliency", "lime"],  # cheapest first, as listed
    }
    page.screenshot(path=str(artifacts / "ml-engineer.png"), full_page=True)
    assert missing == []  # no missing favicon, script or API call


def test_data_manager_uploads_with_progress_sets_readers_and_sees_members(
    page, login, project, member, tmp_path
):
    import numpy as np

    member(Role.DATA_MANAGER, username="dm")
    member(Role.ANNOTATOR, username="reader9")
    path = tmp_path / "DOE_JOHN_MRN123456_knee.png"
    path.write_bytes(png_bytes(np.random.default_rng(0).integers(0, 255, (48, 40), dtype=np.uint8)))

    login(page, "dm")
    page.goto(f"/projects/{project.pk}/")
    page.click("text=Data, readers and members")
    page.wait_for_selector("#members >> text=reader9")
    page.set_input_files("#file", str(path))
    page.click("#upload button[type=submit]")
    page.wait_for_selector("#upload-status >> text=imported: image-0001")
    assert page.locator("#upload-progress").evaluate("el => el.value") == 100
    page.wait_for_selector("#images >> text=image-0001")
    assert "DOE" not in page.content()  # the file name names nothing
    page.wait_for_selector("#imports >> text=file 1: 1 image(s)")  # the import job, kept for later
    with server_idle():
        assert project.images.get().shape[1:3] == [48, 40]

    page.fill("#readers_per_case", "2")
    page.fill("#multi_read_share", "0.25")  # the reading policy, set here rather than only by the API
    page.fill("#multi_read_readers", "3")
    page.fill("#routing_share", "0.1")
    page.fill("#routing_readers", "4")
    page.fill("#unit_slices", "5")  # volumes are read in slabs of 5 slices, queued by their mean score
    page.select_option("#unit_score", "mean")
    page.click("#readers button[type=submit]")
    page.wait_for_selector("#readers-saved:visible")
    with server_idle():
        project.refresh_from_db()
    assert project.readers_per_case == 2
    assert (project.multi_read_share, project.multi_read_readers) == (0.25, 3)
    assert (project.routing_share, project.routing_readers) == (0.1, 4)
    assert (project.unit_slices, project.unit_score) == (5, "mean")
    assert page.locator("#btn-start").count() == 0  # not the ML page


def test_a_refused_upload_says_why_for_each_file(page, login, project, member, tmp_path):
    """A file refused from its headers fails the upload at once; one refused by the sandboxed parse is
    listed with its code under the upload and in the recent imports; nothing is stored."""
    from tests.hostile import dicom_deflated_bomb

    member(Role.DATA_MANAGER, username="dm")
    notes = tmp_path / "notes.txt"
    notes.write_bytes(b"not an image at all\n" * 20)
    bomb = tmp_path / "bomb.dcm"
    bomb.write_bytes(dicom_deflated_bomb(64 << 20))
    login(page, "dm")
    page.goto(f"/projects/{project.pk}/data/")
    page.expect_failures(400, f"/projects/{project.pk}/images")  # the file refused from its headers
    page.set_input_files("#file", str(notes))
    page.click("#upload button[type=submit]")
    page.wait_for_selector("#notice >> text=Upload failed")
    page.set_input_files("#file", str(bomb))
    page.click("#upload button[type=submit]")
    page.wait_for_selector("#upload-errors >> text=archive_too_large")
    page.wait_for_selector("#imports >> text=failed")
    with server_idle():
        assert not project.images.exists()


def test_ml_engineer_runs_the_explanation_quality_report_and_reads_the_table(
    page, login, project, member, artifacts
):
    from tests.workers.test_training_helpers import make_version
    from workers.models import ExplanationReport, VersionState

    engineer = member(Role.ML_ENGINEER, username="mleng")
    seed_project(project, engineer, n_train=0, n_val=1, n_test=2, n_pool=0)
    make_version(project, number=1, state=VersionState.ACTIVE)

    login(page, "mleng")
    page.goto(f"/projects/{project.pk}/ml/")
    page.wait_for_selector("#report-status:has-text('No report yet')")
    page.click("#btn-report")  # Celery is eager in tests: the report runs inside the request
    page.wait_for_function(
        "() => document.querySelector('#report-progress').dataset.status === 'succeeded'", timeout=300_000
    )
    with server_idle():  # the panel's poll may still be in flight
        report = ExplanationReport.objects.get(project=project)
    assert report.status == "succeeded" and len(report.case_ids) == 3
    rows = page.locator("#report-rows tr")
    assert rows.count() == len(report.result["methods"]) + len(report.result["skipped"])
    gradcam = page.locator("#report-rows tr[data-method=gradcam]").inner_text()
    assert f"{report.result['methods']['gradcam']['insertion_auc']:.3f}" in gradcam
    assert "attention" not in report.result["methods"]  # a plain U-Net has no attention gates to show
    assert {"lime", "kernel_shap", "gradcam_shap"} <= set(report.result["methods"])  # the whole catalogue
    page.wait_for_function("() => document.querySelector('#report-plot').naturalWidth > 0")
    assert "majority baseline" in page.locator("#report-surrogate").inner_text()
    page.screenshot(path=str(artifacts / "ml-explanation-report.png"), full_page=True)


def test_data_manager_reads_flag_and_skip_reasons_and_returns_a_flagged_case(page, login, project, member):
    from annotations.services.queue import assignment_flag, assignment_skip, case_claim_next
    from tests.workers.test_training_helpers import seed_project

    owner = member(Role.ML_ENGINEER)
    seed_project(project, owner, n_train=0, n_val=0, n_test=0, n_pool=3)
    flagger, skipper = member(Role.ANNOTATOR, username="ann1"), member(Role.ANNOTATOR, username="ann2")
    flagged = case_claim_next(project=project, reader=flagger).case
    assignment_flag(case=flagged, reader=flagger, reason="wrong anatomy or modality: knee")
    skipped = case_claim_next(project=project, reader=skipper).case
    assignment_skip(case=skipped, reader=skipper, reason="image quality too poor")
    member(Role.DATA_MANAGER, username="dm")
    login(page, "dm")
    page.goto(f"/projects/{project.pk}/data/")
    row = page.locator(f"#flagged tr[data-case='{flagged.pk}']")
    row.wait_for()
    assert "ann1" in row.inner_text() and "knee" in row.inner_text()
    page.wait_for_selector("#skipped >> text=image quality too poor")
    row.get_by_role("button", name=f"Return case {flagged.pk} to the reading queue").click()
    page.wait_for_selector("#flagged >> text=No flagged cases.")
    with server_idle():
        flagged.refresh_from_db()
        assert flagged.flagged_at is None


def test_ml_engineer_imports_a_monai_bundle_and_a_refused_one_says_why(page, login, project, member):
    from tests.workers.test_model_import import UNET, make_bundle

    engineer = member(Role.ML_ENGINEER, username="bundler")
    seed_project(project, engineer)
    login(page, "bundler")
    page.goto(f"/projects/{project.pk}/ml/")
    page.wait_for_selector("#versions >> text=No model versions yet")
    page.expect_failures(400, "/model-bundles")
    unsafe = make_bundle(extra_config={"x": "$import subprocess"})
    page.set_input_files(
        "#bundle-file", {"name": "unsafe.zip", "mimeType": "application/zip", "buffer": unsafe}
    )
    page.click("#bundle-import button[type=submit]")
    page.wait_for_selector("#notice:has-text('subprocess')")
    assert "unsafe_config" in page.locator("#notice").inner_text()

    good = make_bundle(UNET)
    page.set_input_files("#bundle-file", {"name": "toy.zip", "mimeType": "application/zip", "buffer": good})
    page.click("#bundle-import button[type=submit]")  # eager Celery: the import runs inside the request
    page.wait_for_selector("#versions tr[data-version='1']")
    with server_idle():
        run = TrainingRun.objects.get(project=project)
        version = ModelVersion.objects.get(project=project, number=1)
    assert run.trigger == "bundle" and run.status == RunStatus.SUCCEEDED, run.outcome
    assert version.config["backend"] == "monai_bundle"
    assert "MONAI bundle toy_bundle" in page.locator(f"#run-history tr[data-run='{run.pk}']").inner_text()
    page.wait_for_selector("#run-recipe:has-text('Imported MONAI bundle toy_bundle 0.1.0 (UNet)')")


def test_each_version_says_which_backend_made_it_and_nnunet_offers_no_bundle(page, login, project, member):
    from tests.workers.test_training_helpers import make_version

    member(Role.ML_ENGINEER, username="mleng2")
    make_version(project, number=1, state="retired")
    nnunet = make_version(project, number=2, state="active")
    nnunet.config = {**nnunet.config, "backend": "nnunet"}
    nnunet.save(update_fields=["config"])
    login(page, "mleng2")
    page.goto(f"/projects/{project.pk}/ml/")
    page.wait_for_selector("#versions tr[data-version='2'] .backend")
    assert page.locator("#versions tr[data-version='2'] .backend").inner_text() == "nnU-Net v2"
    assert page.locator("#versions tr[data-version='2'] a.bundle-download").count() == 0  # it would be a 409
    assert page.locator("#versions tr[data-version='1'] .backend").count() == 0  # the built-in U-Net
    assert page.locator("#versions tr[data-version='1'] a.bundle-download").count() == 1
