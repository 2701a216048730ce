"""Server-rendered pages. Thin: a selector for the data, a template for the HTML."""

from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import LoginView
from django.http import Http404, HttpResponseServerError, JsonResponse
from django.shortcuts import render
from django.template import loader
from rest_framework.exceptions import NotFound

from annotations.permissions import reads_blind
from annotations.selectors.images import case_list, image_list
from annotations.selectors.projects import project_get_for_user, project_list_for_user


def home(request):
    if not request.user.is_authenticated:
        return LoginView.as_view(template_name="annotations/login.html")(request)
    return render(request, "annotations/home.html", {"projects": project_list_for_user(user=request.user)})


@login_required
def project_page(request, project_id: int):
    try:
        project, roles = project_get_for_user(user=request.user, project_id=project_id)
    except NotFound as exc:
        raise Http404("project not found") from exc
    reader = request.user if reads_blind(roles) else None  # blind readers see only cases given to them
    images = list(image_list(project=project, reader=reader))
    cases = list(case_list(project=project, reader=reader))
    by_image: dict[int, list] = {}
    for case in cases:
        by_image.setdefault(case.image_id, []).append(case)
    rows = [{"image": img, "cases": by_image.get(img.pk, [])} for img in images]
    return render(
        request, "annotations/project.html", {"project": project, "roles": sorted(roles), "rows": rows}
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
