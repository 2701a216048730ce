"""The editor's volume panel in a real browser (issue 19) on the real series of DATA.md: the TotalSegmentator
CT series (20 DICOM slices, 512 x 512) and the Colin27 MR volume (MRIcron's ch2, 181 slices): a reader
scrolls through every slice of the case's volume with the keyboard and the wheel, the coronal and sagittal
views carry the standard markers, a click moves the cross-hair, and the editor's own slice shows the
orientation letters of its direction cosines."""

import io
import zipfile

import pytest

from annotations.models import Role
from tests.e2e.helpers import server_idle, wait_ready
from tests.factories import MembershipFactory
from workers.ml.imaging.datasets import data_dir
from workers.services.imports import image_import

pytestmark = pytest.mark.e2e

CT = data_dir() / "totalsegmentator" / "tests" / "reference_files" / "example_ct_dicom"
COLIN = data_dir() / "mricron" / "usr" / "share" / "mricron" / "templates" / "ch2.nii.gz"


@pytest.fixture
def reader(member):
    return member(Role.ANNOTATOR, username="reader1")


def _ct_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for path in sorted(CT.iterdir()):
            zf.write(path, f"ct/{path.name}")
    return buf.getvalue()


def _volume_project(project, data: bytes, modality: str):
    project.modality = modality
    project.save(update_fields=["modality"])
    owner = MembershipFactory(project=project, role=Role.DATA_MANAGER).user
    return image_import(project=project, user=owner, data=data).images[0]


def _panel(page) -> dict:
    return page.evaluate(
        """() => { const v = window.hitlEditor.volume; const r = v.root.dataset;
        return {view: r.view, index: Number(r.index), markers: r.markers, max: Number(v.slider.max),
        drawn: v.frameTimes.length, cursor: [...v.cursor], times: [...v.frameTimes]}; }"""
    )


def _wait_index(page, index: int) -> None:
    page.wait_for_function("(i) => document.getElementById('volume').dataset.index === String(i)", arg=index)


def _scroll_every_slice(page, count: int, start: int) -> None:
    """Up to the first slice with the keys, then down through every one of them with the wheel."""
    panel = page.locator("#volume canvas")
    panel.focus()
    for i in range(start - 1, -1, -1):
        page.keyboard.press("ArrowUp")
        _wait_index(page, i)
    panel.hover()
    for i in range(1, count):
        page.mouse.wheel(0, 100)
        _wait_index(page, i)


@pytest.mark.parametrize("which", ["ct", "colin27"])
def test_a_reader_scrolls_every_slice_of_a_real_volume_in_three_views(page, login, project, reader, which):
    with server_idle():
        if which == "ct":
            image = _volume_project(project, _ct_zip(), "CT")
        else:
            image = _volume_project(project, COLIN.read_bytes(), "MR")
    slices = int(image.shape[0])
    assert slices == (20 if which == "ct" else 181)
    login(page, "reader1")
    page.goto(f"/projects/{project.pk}/annotate/")
    wait_ready(page)
    page.wait_for_selector("#volume:not([hidden])[data-index]")
    first = _panel(page)
    case_slice = page.evaluate("window.hitlEditor.session.payload.case.slice_index")
    assert first["view"] == "axial" and first["index"] == case_slice and first["max"] == slices - 1
    assert first["markers"] == "APRL"  # anterior up, the patient's right on the screen's left
    main = [page.locator(f"#markers .m-{side}").inner_text() for side in ("top", "bottom", "left", "right")]
    assert main == ["A", "P", "R", "L"]  # both real volumes store axial slices in the radiological layout

    _scroll_every_slice(page, slices, case_slice)
    scrolled = _panel(page)
    assert scrolled["index"] == slices - 1 and scrolled["drawn"] >= slices  # every slice loaded and drawn

    page.click("#volume .volume-views button[data-view=coronal]")
    page.wait_for_function("document.getElementById('volume').dataset.view === 'coronal'")
    page.wait_for_function("document.getElementById('volume').dataset.markers === 'SIRL'")
    box = page.locator("#volume canvas").bounding_box()
    page.mouse.click(
        box["x"] + box["width"] * 0.3, box["y"] + box["height"] / 2
    )  # cursor to the patient's right
    page.wait_for_function("(c) => window.hitlEditor.volume.cursor[2] !== c", arg=scrolled["cursor"][2])
    page.click("#volume .volume-views button[data-view=sagittal]")
    page.wait_for_function("document.getElementById('volume').dataset.markers === 'SIAP'")
    sagittal = _panel(page)
    assert sagittal["index"] == page.evaluate("window.hitlEditor.volume.cursor[2]")  # the clicked column
    page.click("#volume .volume-home")
    page.wait_for_function(
        "(i) => document.getElementById('volume').dataset.index === String(i)", arg=case_slice
    )
    times = sorted(scrolled["times"])
    print(
        f"\n{which}: {slices} slices scrolled; draw ms median {times[len(times) // 2]:.1f},"
        f" p95 {times[int(0.95 * (len(times) - 1))]:.1f}"
    )


def test_copy_interpolate_and_the_window_bounded_brush(page, login, project, reader, member):
    """On slice 2 of a 5-slice volume whose slices 1 and 3 the reader labelled: copy the previous slice's
    label, interpolate between the two (shape-based), undo; then the brush with "within window" paints only
    the pixels whose value lies inside the window, and region growing from a click fills the connected
    pixels inside the window."""
    import numpy as np

    from annotations.selectors.volume import shape_interpolate
    from tests.annotations.test_volume import ACQUISITIONS, _affine, _disc, _image
    from tests.e2e.helpers import drag, editor_state
    from tests.workers.test_training_helpers import annotate

    with server_idle():
        pixels = np.zeros((5, 48, 48), np.int16)
        pixels[:, :, 24:] = 500  # the right half is bright
        image = _image(project, member(Role.DATA_MANAGER), _affine(ACQUISITIONS["axial"]), pixels)
        below, above = (
            _disc((48, 48), 24, 24, 6).astype(np.uint8),
            _disc((48, 48), 24, 24, 14).astype(np.uint8),
        )
        for k, mask in ((1, below), (3, above)):
            annotate(image.cases.get(slice_index=k), mask=mask, user=reader)
        image.cases.filter(slice_index=2).update(priority=10.0)  # the queue gives slice 2 first
    login(page, "reader1")
    page.goto(f"/projects/{project.pk}/annotate/")
    wait_ready(page)
    assert page.evaluate("window.hitlEditor.session.payload.case.slice_index") == 2
    page.wait_for_selector("#volume-tools:not([hidden]) #btn-interpolate:not([disabled])")
    assert page.locator("#btn-copy-prev").is_enabled() and page.locator("#btn-copy-next").is_enabled()
    page.click("#btn-copy-prev")
    page.wait_for_function("window.hitlEditor.history.undoStack.length === 1")
    assert np.array_equal(editor_state(page)["mask"], below)
    page.click("#btn-interpolate")
    page.wait_for_function("window.hitlEditor.history.undoStack.length === 2")
    assert np.array_equal(editor_state(page)["mask"], shape_interpolate(below, above, 0.5))
    page.keyboard.press("Control+z")
    page.keyboard.press("Control+z")
    assert not editor_state(page)["mask"].any()

    page.evaluate("window.hitlEditor.setWindow(500, 10)")  # window 495..505: only the bright half
    page.check("#brush-window")
    drag(page, [(4.5, 40.5), (43.5, 40.5)])  # a stroke across both halves
    mask = editor_state(page)["mask"]
    assert mask[:, 24:].any() and not mask[:, :24].any()  # painted only where the value is in the window
    page.uncheck("#brush-window")
    drag(page, [(4.5, 44.5), (43.5, 44.5)])
    assert editor_state(page)["mask"][44, :24].any()  # without it the brush paints everywhere

    page.keyboard.press("Control+z")
    page.keyboard.press("Control+z")
    page.keyboard.press("o")  # region grow from a click on the bright half: all of it, nothing else
    from tests.e2e.helpers import client_xy

    page.mouse.click(*client_xy(page, 30.5, 10.5))
    page.wait_for_function("window.hitlEditor.history.undoStack.length === 1")
    grown = editor_state(page)["mask"]
    assert grown[:, 24:].all() and not grown[:, :24].any()


def test_the_agreement_case_page_measures_the_readers_on_the_whole_volume(page, login, project, member):
    """Two readers labelled slices 0-3 of a 4-slice volume: the case's agreement page adds their 3D
    agreement (Dice, HD95 in mm on the volume's spacing) over those slices."""
    import numpy as np

    from tests.annotations.test_volume import ACQUISITIONS, _affine, _image
    from tests.workers.test_training_helpers import annotate
    from workers.services.agreement import agreement_update
    from workers.services.agreement_volume import volume_agreement

    engineer = member(Role.ML_ENGINEER, username="engineer")
    a, b = member(Role.ANNOTATOR), member(Role.ANNOTATOR)
    with server_idle():
        image = _image(
            project,
            member(Role.DATA_MANAGER),
            _affine(ACQUISITIONS["axial"]),
            np.zeros((4, 32, 32), np.int16),
        )
        for reader, r in ((a, 8), (b, 10)):
            for k in range(4):
                yy, xx = np.mgrid[:32, :32]
                annotate(
                    image.cases.get(slice_index=k),
                    mask=((yy - 16) ** 2 + (xx - 16) ** 2 < r * r).astype(np.uint8),
                    user=reader,
                )
        case = image.cases.get(slice_index=1)
        agreement_update(case_id=case.pk)
        expected = volume_agreement(image=image)["metrics"]["pairs"][0]
    login(page, "engineer")
    page.goto(f"/projects/{project.pk}/agreement/cases/{case.pk}/")
    page.wait_for_selector("#volume-agreement table:not([hidden]) tbody tr")
    cells = page.locator("#volume-agreement tbody tr td").all_inner_texts()
    assert cells[1] == f"{expected['dice']:.3f}" and cells[3] == f"{expected['hd95']:.3f}"
    assert page.locator("#volume-agreement-status").inner_text().startswith("Slices 1–4 (4 labelled")
    assert engineer.pk
