"""The annotator's editor in a real browser: claim, paint, undo, layers, submit; shortcuts and history;
the stale-base conflict; skip with a reason; smoothness on 512x512."""

import numpy as np
import pytest
from rest_framework.test import APIClient

from annotations.models import Annotation, Role
from hitl.core.storage import bytes_load, mask_from_png
from tests.e2e.helpers import drag, editor_state, reading_world, server_idle, wait_ready

pytestmark = pytest.mark.e2e


@pytest.fixture
def world(project, member):
    return reading_world(project, member)


@pytest.fixture
def reader(member):
    return member(Role.ANNOTATOR, username="reader1")


def disc(shape, cx, cy, r):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (xx + 0.5 - cx) ** 2 + (yy + 0.5 - cy) ** 2 <= r * r


def test_annotator_claims_paints_undoes_toggles_gradcam_and_submits(
    page, login, project, world, reader, artifacts
):
    login(page, "reader1")
    page.click(f"a[href='/projects/{project.pk}/']")
    page.click("text=Start annotating")
    wait_ready(page)
    first = editor_state(page)
    assert first["proposal"] is not None and np.array_equal(first["mask"], first["proposal"])
    assert page.locator("#why").inner_text().startswith("strategy")
    for _ in range(5):
        page.keyboard.press("[")  # brush 8 -> 3 px
    assert page.locator("#brush-size-out").inner_text() == "3"

    drag(page, [(4.5, 6.5), (14.5, 6.5)])  # label 1 (the default)
    page.keyboard.press("2")
    drag(page, [(4.5, 22.5), (14.5, 22.5)])  # label 2, then undone
    painted = editor_state(page)
    assert painted["undo"] == 2 and (painted["mask"][22, 5:14] == 2).all()
    page.keyboard.press("Control+z")
    state = editor_state(page)
    assert state["undo"] == 1 and state["redo"] == 1
    assert np.array_equal(state["mask"][18:27], first["proposal"][18:27])  # the undone stroke is gone
    assert (state["mask"][6, 5:14] == 1).all()  # the first stroke stays

    gradcam = page.get_by_label("Grad-CAM", exact=True)
    assert page.locator("li[data-layer^=gradcam] .badge", has_text="v1").count() == 1
    gradcam.check()
    assert page.evaluate("window.hitlEditor.viewer.overlays.find(o => o.id.startsWith('gradcam')).visible")
    page.get_by_label("Grad-CAM opacity").fill("80")
    page.screenshot(path=str(artifacts / "editor-gradcam.png"))

    expected = state["mask"]
    case_id = state["case"]
    page.click("#btn-submit")
    wait_ready(page, other_than=case_id)  # the next case opens by itself
    assert page.locator("#stat-done").inner_text() == "1"

    with server_idle():  # the next case's requests may still be in flight
        annotation = Annotation.objects.get(case_id=case_id, author=reader)
        api = APIClient()
        api.force_authenticate(reader)
        body = api.get(f"/api/v1/cases/{case_id}").json()
        png = api.get(f"/api/v1/annotations/{annotation.pk}/mask.png")
    revisions = [(a["id"], a["revision"], a["author"]) for a in body["annotations"]]
    assert revisions == [(annotation.pk, 1, reader.pk)] and body["current_revision"] == 1
    assert png.status_code == 200
    stored = mask_from_png(png.content)
    assert np.array_equal(stored, expected)
    assert (stored[6, 5:14] == 1).all() and np.array_equal(stored[18:27], first["proposal"][18:27])
    assert annotation.proposal_model_version_id == world["version"].pk and annotation.time_spent_s > 0
    assert np.array_equal(mask_from_png(bytes_load(annotation.mask_path)), expected)


def _click_pixel(page, x: int, y: int) -> None:
    cx, cy = page.evaluate("([x, y]) => window.hitlEditor.viewer.toClient(x, y)", [x + 0.5, y + 0.5])
    page.mouse.click(cx, cy)


def _pressed(page, selector: str) -> str:
    """The radio's state (tools and labels are radios in their radiogroups: aria-checked, not aria-pressed)."""
    assert page.locator(selector).get_attribute("role") == "radio"
    return page.locator(selector).get_attribute("aria-checked")


def test_shortcuts_help_and_sixty_step_undo_redo_never_wipe_the_mask(page, login, project, world, reader):
    login(page, "reader1")
    page.goto(f"/projects/{project.pk}/annotate/")
    wait_ready(page)
    opened = editor_state(page)
    assert opened["mask"].any(), "the proposal should give the mask some foreground"

    page.keyboard.press("?")
    help_dialog = page.locator("#dlg-help")
    assert help_dialog.is_visible() and "Undo" in help_dialog.inner_text()
    page.keyboard.press("Escape")
    assert not help_dialog.is_visible()
    page.keyboard.press("e")
    assert (
        _pressed(page, ".tool[data-tool=eraser]") == "true"
        and _pressed(page, ".tool[data-tool=brush]") == "false"
    )
    page.keyboard.press("p")
    assert _pressed(page, ".tool[data-tool=polygon]") == "true"
    page.keyboard.press("b")
    page.keyboard.press("]")
    assert page.locator("#brush-size-out").inner_text() == "9"
    page.keyboard.press("2")
    assert _pressed(page, ".label-btn[data-value='2']") == "true"
    page.keyboard.press("g")
    assert page.get_by_label("Grad-CAM", exact=True).is_checked()
    page.keyboard.press("m")
    assert not page.get_by_label("Mask (editable)", exact=True).is_checked()
    page.keyboard.press("m")

    for _ in range(8):
        page.keyboard.press("[")  # down to 1 px: one pixel per click
    assert page.locator("#brush-size-out").inner_text() == "1"
    painted = [(x, y) for y in range(1, 31, 3) for x in range(1, 31, 4)][:60]
    assert len(painted) == 60
    current = None
    for x, y in painted:
        label = "2" if opened["mask"][y, x] == 1 else "1"
        if label != current:
            page.keyboard.press(label)
            current = label
        _click_pixel(page, x, y)
    after = editor_state(page)
    assert after["undo"] == 60
    assert all(after["mask"][y, x] != opened["mask"][y, x] for x, y in painted)

    for _ in range(70):  # more undos than steps: stops at the opened state
        page.keyboard.press("Control+z")
    back = editor_state(page)
    assert back["undo"] == 0 and back["redo"] == 60
    assert np.array_equal(back["mask"], opened["mask"])  # the proposal is still there, not wiped
    assert page.locator("#btn-undo").is_disabled() and page.locator("#dirty").is_hidden()
    for _ in range(60):
        page.keyboard.press("Control+y")
    assert np.array_equal(editor_state(page)["mask"], after["mask"])

    page.keyboard.press("p")  # polygon: four corners, Enter fills
    page.keyboard.press("1")
    for x, y in [(2, 2), (12, 2), (12, 12), (2, 12)]:
        cx, cy = page.evaluate("([x, y]) => window.hitlEditor.viewer.toClient(x, y)", [x, y])
        page.mouse.click(cx, cy)
    page.keyboard.press("Enter")
    filled = editor_state(page)
    assert (filled["mask"][2:12, 2:12] == 1).all() and filled["undo"] == 61

    page.keyboard.press("r")  # reset to proposal, undoable
    assert np.array_equal(editor_state(page)["mask"], opened["proposal"])
    page.keyboard.press("Control+z")
    assert np.array_equal(editor_state(page)["mask"], filled["mask"])

    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.type), d.accept()))
    with page.expect_event("close"):
        page.close(run_before_unload=True)  # unsaved changes: the browser asks first
    assert dialogs == ["beforeunload"]


def test_stale_base_conflict_is_shown_and_resolved_without_losing_the_mask(
    page, login, project, world, reader
):
    from tests.workers.test_training_helpers import annotate

    login(page, "reader1")
    page.goto(f"/projects/{project.pk}/annotate/")
    wait_ready(page)
    drag(page, [(6.5, 16.5), (26.5, 16.5)])
    mine = editor_state(page)
    case = project.cases.get(pk=mine["case"])
    theirs = np.zeros_like(mine["mask"])
    theirs[:, :16] = 2
    annotate(case, mask=theirs, user=reader)  # e.g. saved from another tab: revision 1 appears
    page.expect_failures(409, f"/cases/{case.pk}/annotations")  # stale_base

    page.click("#btn-submit")
    notice = page.locator("#notice")
    notice.wait_for(state="visible")
    assert "revision 1" in notice.inner_text() and "(stale_base)" not in notice.inner_text()
    assert np.array_equal(editor_state(page)["mask"], mine["mask"])  # nothing lost
    assert page.locator("#dirty").is_visible() and case.annotations.count() == 1

    page.click("#btn-conflict-load")
    page.wait_for_function(
        "() => document.querySelector('#notice').textContent.includes('Loaded revision 1')"
    )
    assert np.array_equal(editor_state(page)["mask"], theirs)
    page.keyboard.press("Control+z")  # the reader's own mask comes back
    assert np.array_equal(editor_state(page)["mask"], mine["mask"])
    page.click("#btn-submit")
    page.wait_for_function("(id) => window.hitlEditor.session.caseId !== id", arg=mine["case"])
    latest = case.annotations.order_by("-revision").first()
    assert latest.revision == 2 and latest.base.revision == 1 and latest.author_id == reader.pk
    assert np.array_equal(mask_from_png(bytes_load(latest.mask_path)), mine["mask"])


def test_skip_needs_a_reason_then_the_next_case_opens(page, login, project, world, reader):
    from annotations.models import Assignment

    login(page, "reader1")
    page.goto(f"/projects/{project.pk}/annotate/")
    wait_ready(page)
    first = editor_state(page)["case"]
    page.click("#btn-skip")
    page.click("#reason-ok")
    page.locator("#reason-error").wait_for(state="visible")  # the dialog's close event comes a task later
    page.select_option("#reason-choice", "image quality too poor to annotate")
    page.fill("#reason-text", "motion artefact")
    page.click("#reason-ok")
    wait_ready(page, other_than=first)
    with server_idle():  # the next case's requests may still be in flight
        skipped = Assignment.objects.get(case_id=first, reader=reader)
    assert (
        skipped.status == "skipped"
        and skipped.reason == "image quality too poor to annotate: motion artefact"
    )
    page.click("#btn-flag")
    page.select_option("#reason-choice", "wrong anatomy or modality")
    page.click("#reason-ok")
    wait_ready(page)
    page.wait_for_function("(id) => window.hitlEditor.session.caseId !== id", arg=first)


def test_brush_on_512x512_keeps_within_a_frame(page, login, project, member):
    """Smoothness: each pointer sample of a long stroke is handled, and each frame drawn, in < 16 ms."""
    from tests.workers.test_training_helpers import add_case

    reader = member(Role.ANNOTATOR, username="reader512")
    image = np.random.default_rng(0).normal(100, 30, (512, 512)).astype(np.float32)
    add_case(project, user=reader, image=image, mask=None, split="pool")
    login(page, "reader512")
    page.goto(f"/projects/{project.pk}/annotate/")
    wait_ready(page)
    timing = page.evaluate(
        """async () => {
        const e = window.hitlEditor, v = e.viewer, c = v.canvas, frames = [], handle = [];
        const prev = v.onRender; v.onRender = (x) => { frames.push(x.lastFrameMs); prev(x); };
        e.setBrushSize(24);
        const at = (x, y) => { const [cx, cy] = v.toClient(x, y); return {clientX: cx, clientY: cy,
            pointerId: 1, button: 0, buttons: 1, bubbles: true, isPrimary: true, pointerType: 'mouse'}; };
        c.dispatchEvent(new PointerEvent('pointerdown', at(20, 20)));
        for (let i = 0; i <= 400; i++) {
            const t0 = performance.now();
            c.dispatchEvent(new PointerEvent('pointermove', at(20 + i * 1.2, 20 + 200 * Math.sin(i / 40) ** 2)));
            handle.push(performance.now() - t0);
            if (i % 4 === 0) await new Promise(requestAnimationFrame);
        }
        c.dispatchEvent(new PointerEvent('pointerup', at(500, 20)));
        await new Promise(requestAnimationFrame);
        const p95 = (a) => a.slice().sort((x, y) => x - y)[Math.floor(a.length * 0.95)];
        const painted = e.history.mask.reduce((n, m) => n + (m === 1), 0);
        return {handle_p95: p95(handle), handle_max: Math.max(...handle), frame_p95: p95(frames),
                frames: frames.length, painted, steps: e.history.undoStack.length};
    }"""
    )
    print("512x512 brush timing (ms):", timing)
    assert timing["steps"] == 1 and timing["painted"] > 24 * 400
    assert timing["handle_p95"] < 16 and timing["frame_p95"] < 16, timing


def test_reader_asks_for_an_interactive_and_a_queued_explanation(page, login, project, world, reader):
    from workers.models import Explanation

    login(page, "reader1")
    page.goto(f"/projects/{project.pk}/annotate/")
    wait_ready(page)
    case_id = editor_state(page)["case"]
    options = page.locator("#explain-method option").all_inner_texts()
    assert "uncertainty · on demand" in options and any(o.startswith("lime · ~201× forward") for o in options)
    assert not any(o.startswith("gradcam ·") for o in options)  # the pipeline made it already

    page.select_option("#explain-method", "uncertainty")
    page.click("#btn-explain")
    page.wait_for_selector("#explain-status:has-text('uncertainty computed now')")
    # The proposal's own version's uncertainty is already a layer: it is shown, not listed a second time.
    page.wait_for_selector("li[data-layer='uncertainty'] input:checked")
    assert page.evaluate("window.hitlEditor.viewer.overlays.find(o => o.id === 'uncertainty').visible")
    assert page.locator("li[data-layer='uncertainty-v1']").count() == 0
    assert page.locator("#explain-method option[value=uncertainty]").count() == 0

    page.select_option("#explain-method", "lime")
    page.click("#btn-explain")
    page.wait_for_selector("#explain-status:has-text('lime is queued')")
    page.wait_for_selector(
        "li[data-layer='lime-v1']", timeout=30_000
    )  # the worker made it; the poll found it
    page.wait_for_selector("#explain-status:has-text('lime is ready')")
    with server_idle():  # the editor's poll may still be in flight
        made = list(
            Explanation.objects.filter(case_id=case_id, model_version=world["version"]).values_list(
                "method", flat=True
            )
        )
    assert {"uncertainty", "lime"} <= set(made)


def _drawn(page) -> dict:
    """Per label value: how many pixels the mask layer paints in that label's colour."""
    return page.evaluate(
        """() => { const v = window.hitlEditor.viewer; v.render(); const d = v.maskData.data;
        const out = {}; for (const [value, c] of v.colors.entries()) { if (!c) continue; let n = 0;
        for (let i = 0; i < d.length; i += 4) if (d[i + 3] && d[i] === c[0] && d[i + 1] === c[1] && d[i + 2] === c[2]) n++;
        out[value] = n; } return out; }"""
    )


def test_outline_mode_and_label_toggles_change_what_is_drawn_never_the_mask(
    page, login, project, world, reader, artifacts
):
    login(page, "reader1")
    page.goto(f"/projects/{project.pk}/annotate/")
    wait_ready(page)
    # Two solid shapes (the untrained test model's proposal is speckle: every pixel of it is a border).
    page.evaluate(
        """() => { const v = window.hitlEditor.viewer; const m = v.mask; m.fill(0);
        for (let y = 0; y < v.height; y++) for (let x = 0; x < v.width; x++) {
          if ((x - 12) ** 2 + (y - 12) ** 2 <= 64) m[y * v.width + x] = 1;
          if (x >= 20 && x < 30 && y >= 18 && y < 28) m[y * v.width + x] = 2; }
        v.updateMask(0, 0, v.width - 1, v.height - 1); }"""
    )
    before = editor_state(page)["mask"]
    labels = {int(v): int((before == int(v)).sum()) for v in np.unique(before) if v}
    assert sorted(labels) == [1, 2]
    filled = _drawn(page)
    assert {v: filled[str(v)] for v in labels} == labels  # fill: every labelled pixel
    page.check("#mask-outline")
    page.get_by_label("Grad-CAM", exact=True).check()  # a map with its legend beside the outlined mask
    page.screenshot(path=str(artifacts / "editor-outline.png"))
    page.get_by_label("Grad-CAM", exact=True).uncheck()
    outlined = _drawn(page)
    for v, n in labels.items():  # a border only: fewer pixels, none of them inside the region
        assert 0 < outlined[str(v)] < n
        region = before == v
        inner = (
            region
            & np.roll(region, 1, 0)
            & np.roll(region, -1, 0)
            & np.roll(region, 1, 1)
            & np.roll(region, -1, 1)
        )
        assert outlined[str(v)] <= n - int(inner[1:-1, 1:-1].sum())
    hide = min(labels)
    page.uncheck(f"#mask-label-{hide}")
    assert _drawn(page)[str(hide)] == 0
    page.uncheck("#mask-outline")
    page.check(f"#mask-label-{hide}")
    assert _drawn(page) == filled
    assert np.array_equal(editor_state(page)["mask"], before)  # display options never edit the mask


def _tinted(page) -> int:
    return page.evaluate(
        """() => { const o = window.hitlEditor.viewer.overlays.find((x) => x.id === "uncertainty");
        const d = o.canvas.getContext("2d").getImageData(0, 0, o.canvas.width, o.canvas.height).data;
        let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n; }"""
    )


def test_uncertainty_is_one_layer_tinted_only_above_an_adjustable_threshold(
    page, login, project, world, reader
):
    from workers.services.proposals import explanations_compute

    explanations_compute(
        version_id=world["version"].pk, case_ids=[c.pk for c in world["pool"]], methods=["uncertainty"]
    )
    login(page, "reader1")
    page.goto(f"/projects/{project.pk}/annotate/")
    wait_ready(page)
    assert page.evaluate(
        "() => window.hitlEditor.session.payload.explanations.some((e) => e.method === 'uncertainty')"
    )
    assert page.locator("[data-layer='uncertainty']").count() == 1
    assert page.locator("[data-layer^='uncertainty-v']").count() == 0  # the same map is not listed twice
    page.wait_for_function("() => window.hitlEditor.viewer.overlays.some((o) => o.id === 'uncertainty')")
    values = page.evaluate(
        "() => Array.from(window.hitlEditor.viewer.overlays.find((o) => o.id === 'uncertainty').values)"
    )
    default = _tinted(page)
    assert default == sum(v >= round(0.2 * 255) and v > 0 for v in values)  # below 20 %: untinted
    page.fill("#uncertainty-threshold", "0")
    page.dispatch_event("#uncertainty-threshold", "input")
    assert _tinted(page) == sum(v > 0 for v in values) >= default
    page.fill("#uncertainty-threshold", "90")
    page.dispatch_event("#uncertainty-threshold", "input")
    assert _tinted(page) == sum(v >= round(0.9 * 255) for v in values) <= default


def test_window_presets_state_the_images_own_units(page, login, project, member, reader):
    """MR intensities stored as fractions (0..1): the presets' W / L are not rounded away ("W 1 / L 0")."""
    from tests.workers.test_training_helpers import add_case

    owner = member(Role.ML_ENGINEER)
    image = np.random.default_rng(0).random((48, 40)).astype(np.float32) * 0.8
    add_case(project, user=owner, image=image, mask=None, split="pool")
    login(page, "reader1")
    page.goto(f"/projects/{project.pk}/annotate/")
    wait_ready(page)
    presets = page.evaluate("() => window.hitlEditor.presets.map((p) => [p.name, p.width, p.center])")
    texts = page.locator("#preset option").all_inner_texts()
    assert [n for n, _w, _c in presets][-2:] == ["Auto (1-99 %)", "Full range"]
    assert all(w < 1 for _n, w, _c in presets[-2:])  # the image's own (fractional) units
    for (name, width, center), text in zip(presets, texts, strict=True):
        w = float(text.split("(W ")[1].split(" /")[0])
        level = float(text.split("/ L ")[1].rstrip(")"))
        assert text.startswith(name)
        assert w == pytest.approx(width, rel=5e-3, abs=0.5 if abs(width) >= 100 else 0)
        assert level == pytest.approx(center, rel=5e-3, abs=0.5 if abs(center) >= 100 else 1e-9)


def test_the_image_does_not_move_when_the_mask_becomes_unsaved(page, login, project, world, reader):
    login(page, "reader1")
    page.set_viewport_size(
        {"width": 900, "height": 700}
    )  # narrow: a badge that took space would wrap the bar
    page.goto(f"/projects/{project.pk}/annotate/")
    wait_ready(page)
    place = "() => { const v = window.hitlEditor.viewer; return [v.scale, v.tx, v.ty]; }"
    before, box = page.evaluate(place), page.locator("#view").bounding_box()
    assert page.locator("#dirty").is_hidden()
    drag(page, [(4.5, 4.5), (20.5, 20.5)])
    assert page.locator("#dirty").is_visible()
    page.evaluate("() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)))")
    assert page.evaluate(place) == before and page.locator("#view").bounding_box() == box


def test_every_map_says_what_it_explains_and_shows_its_colour_scale(page, login, project, world, reader):
    login(page, "reader1")
    page.goto(f"/projects/{project.pk}/annotate/")
    wait_ready(page)
    names = {c["value"]: c["name"] for c in project.label_classes}
    explanations = page.evaluate("() => window.hitlEditor.session.payload.explanations")
    assert explanations
    for e in explanations:
        row = page.locator(f"li[data-layer='{e['method']}-v{e['model_version']}']")
        assert f"explains {names[e['params']['target_class']]}" in row.inner_text()
        assert row.locator(".legend.heat").count() == 1
    assert page.locator("li[data-layer='uncertainty'] .legend.unsure").count() == 1


def test_a_colour_blind_safe_palette_recolours_labels_everywhere_and_is_kept(
    page, login, project, world, reader
):
    login(page, "reader1")
    page.goto(f"/projects/{project.pk}/annotate/")
    wait_ready(page)
    before = editor_state(page)["mask"]
    colour = "(v) => Array.from(window.hitlEditor.viewer.colors[v].slice(0, 3))"
    project_rgb = page.evaluate(colour, 1)
    page.check("#colorblind")
    assert page.evaluate(colour, 1) == [230, 159, 0] and page.evaluate(colour, 2) == [
        86,
        180,
        233,
    ]  # Okabe-Ito
    assert project_rgb != [230, 159, 0]
    swatches = page.locator(".swatch[data-value='1']").evaluate_all("els => els.map(e => e.style.background)")
    assert len(swatches) >= 2 and all(s == "rgb(230, 159, 0)" for s in swatches), (
        swatches
    )  # picker and layers
    assert np.array_equal(editor_state(page)["mask"], before)  # colours only, never the mask
    page.reload()
    wait_ready(page)
    assert page.locator("#colorblind").is_checked() and page.evaluate(colour, 1) == [230, 159, 0]
    page.uncheck("#colorblind")
    assert page.evaluate(colour, 1) == project_rgb
