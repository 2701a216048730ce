"""Server-rendered pages. Thin: a selector for the data, a template for the HTML."""

from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import LoginView
from django.http import Http404
from django.shortcuts import render
from rest_framework.exceptions import NotFound

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
    images = list(image_list(project=project))
    cases = list(case_list(project=project))
    by_image: dict[int, list] = {}
    for case in cases:
        by_image.setdefault(case.image_id, []).append(case)
    rows = [{"image": img, "cases": by_image.get(img.pk, [])} for img in images]
    return render(
        request, "annotations/project.html", {"project": project, "roles": sorted(roles), "rows": rows}
    )
