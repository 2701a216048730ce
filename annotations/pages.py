"""Server-rendered pages of the clinical side: sign-in and home, the project page, the editor, the
agreement dashboard, and the site's own error pages. Thin shells: a selector for the data, a template for
the HTML; the editor fetches its data from the JSON API with the session cookie, so the browser sees
exactly what the API allows."""

import numpy as np
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import LoginView
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponseServerError, JsonResponse
from django.shortcuts import render
from django.template import loader
from rest_framework.exceptions import NotFound

from annotations.models import AnnotationKind
from annotations.plots import histogram_svg, model_svg, overlay_data_uri, readers_svg, trend_svg
from annotations.selectors.agreement import agreement_for_case, project_stats, reader_stats, sees_all_readers
from annotations.selectors.images import case_get_for_user, case_list, image_list
from annotations.selectors.projects import project_for_page, project_get_for_user, project_list_for_user
from annotations.selectors.workspace import reader_progress
from hitl.core.pages import render_project_page
from hitl.core.permissions import Action, allows, reads_blind
from hitl.core.storage import array_open, bytes_load, mask_from_png
from workers.selectors.registry import query_strategy_label


def _project(request, project_id: int):
    try:
        return project_get_for_user(user=request.user, project_id=project_id)
    except NotFound as exc:
        raise Http404("project not found") from exc


def home(request):
    if not request.user.is_authenticated:
        return LoginView.as_view(template_name="annotations/login.html")(request)
    return render(request, "annotations/home.html", {"projects": project_list_for_user(user=request.user)})


@login_required
def project_page(request, project_id: int):
    project, roles = _project(request, project_id)
    reader = request.user if reads_blind(roles) else None  # blind readers see only cases given to them
    images = list(image_list(project=project, reader=reader))
    cases = list(case_list(project=project, reader=reader))
    by_image: dict[int, list] = {}
    for case in cases:
        by_image.setdefault(case.image_id, []).append(case)
    rows = [{"image": img, "cases": by_image.get(img.pk, [])} for img in images]
    return render(
        request,
        "annotations/project.html",
        {
            "project": project,
            "roles": sorted(roles),
            "rows": rows,
            "query_strategy": query_strategy_label(project_id=project.pk),
        },
    )


def _api_error(status: int, code: str, message: str) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message, "details": {}}}, status=status)


def not_found(request, exception=None):
    """Our own 404: the API's error body under /api/, a plain page elsewhere; never the URL list."""
    if request.path.startswith("/api/"):
        return _api_error(404, "not_found", "no such resource")
    return render(request, "404.html", status=404)


def server_error(request):
    """Our own 500, rendered without context: nothing of the request (uploads carry PHI) is echoed."""
    if request.path.startswith("/api/"):
        return _api_error(500, "server_error", "the server failed; the error was logged")
    return HttpResponseServerError(loader.get_template("500.html").render())


@login_required
def editor_page(request, project_id: int):
    project, roles = project_for_page(user=request.user, project_id=project_id, action=Action.ANNOTATE)
    stats = reader_progress(project=project, reader=request.user)
    return render_project_page(request, "annotations/editor.html", project, roles, boot={"stats": stats})


@login_required
def agreement_page(request, project_id: int):
    project, roles = _project(request, project_id)
    all_readers = sees_all_readers(roles)
    stats = project_stats(project=project)
    readers = reader_stats(project=project, reader_ids=None if all_readers else {request.user.pk})
    context = {
        "project": project,
        "stats": stats,
        "readers": readers,
        "sees_all_readers": all_readers,
        "histogram_svg": histogram_svg(stats.dice_histogram),
        "readers_svg": readers_svg(readers),
        "trend_svg": trend_svg(readers),
        "model_svg": model_svg(stats.disputed),
    }
    return render(request, "annotations/agreement.html", context)


def _panel(title, pixels, mask, colors, revision, share=None) -> dict:
    """One panel of the case view: full-resolution overlay (up to 1024 px; shown small, zoomed on click)."""
    src = overlay_data_uri(pixels, mask, colors, max_px=1024)
    return {"title": title, "src": src, "revision": revision, "share": share}


def _share(mask) -> float | None:
    return None if mask is None else float(mask.mean())


@login_required
def agreement_case_page(request, project_id: int, case_id: int):
    """The readers' masks, the consensus and the model's proposal side by side (not for annotators:
    blind reading)."""
    try:
        case, roles = case_get_for_user(user=request.user, case_id=case_id)
    except NotFound as exc:
        raise Http404("case not found") from exc
    if case.project_id != project_id:
        raise Http404("case not found")
    if not sees_all_readers(roles):
        raise PermissionDenied("annotators read blind: other readers' masks are not shown")
    agreement = agreement_for_case(case=case)
    if agreement is None:
        raise Http404("no agreement for this case yet")
    pixels = array_open(case.image.pixels_path)[case.slice_index]
    colors = {int(c["value"]): c["color"] for c in case.project.label_classes}
    readers = list(agreement.readers.select_related("reader", "annotation"))
    masks = [mask_from_png(bytes_load(r.annotation.mask_path)) for r in readers]
    panels = [
        _panel(
            f"{r.reader.username} · Dice {r.dice_vs_consensus:.3f}", pixels, m, colors, r.annotation.revision
        )
        for r, m in zip(readers, masks, strict=True)
    ]
    consensus = agreement.consensus
    consensus_mask = mask_from_png(bytes_load(consensus.mask_path))
    panels.append(
        _panel(
            f"STAPLE consensus · r{consensus.revision}", pixels, consensus_mask, colors, consensus.revision
        )
    )
    disagree = np.any([m != masks[0] for m in masks[1:]], axis=0).astype(np.uint8) if len(masks) > 1 else None
    panels.append(
        _panel("Readers disagree (red)", pixels, disagree, {1: "#ff2020"}, None, share=_share(disagree))
    )
    adjudicated = case.annotations.filter(kind=AnnotationKind.ADJUDICATED).order_by("-revision").first()
    context = {
        "project": case.project,
        "case": case,
        "agreement": agreement,
        "panels": panels,
        "adjudicated": adjudicated,
        "can_adjudicate": allows(roles, Action.ADJUDICATE),
    }
    return render(request, "annotations/agreement_case.html", context)
