"""The browser workspace: the editor (annotators), the ML engineer page and the data manager page.

Thin server-rendered shells: the pages fetch their data from the JSON API with the session cookie, so the
browser sees exactly what the API allows. The views only check that the user may open the page and pass
the little the page needs at start (project, roles, the reader's own running stats)."""

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import render
from django.urls import NoReverseMatch, reverse
from rest_framework.exceptions import NotFound

from annotations.models import CaseSplit, QueryStrategy, Role
from annotations.permissions import Action, allows
from annotations.selectors.projects import project_get_for_user
from annotations.selectors.workspace import reader_stats
from workers.ml.explain_policy import ARCH_LABELS, method_catalogue
from workers.models import ExportFormat, ExportLabels

# Pages that other issues add (exports, agreement); linked when their URL names exist.
OPTIONAL_LINKS = [
    ("agreement-page", "Inter-observer agreement"),
    ("agreement-dashboard", "Inter-observer agreement"),
    ("export-page", "Exports"),
    ("exports-page", "Exports"),
]


def _project(request, project_id: int, action: Action):
    try:
        project, roles = project_get_for_user(user=request.user, project_id=project_id)
    except NotFound as exc:
        raise Http404("project not found") from exc
    if not allows(roles, action):
        raise PermissionDenied(f"your role in this project does not allow: {action.value.replace('_', ' ')}")
    return project, roles


def _links(project_id: int) -> list[dict]:
    out, seen = [], set()
    for name, title in OPTIONAL_LINKS:
        if title in seen:
            continue
        try:
            url = reverse(name, kwargs={"project_id": project_id})
        except NoReverseMatch:
            continue
        seen.add(title)
        out.append({"url": url, "title": title})
    return out


def _page(request, template: str, project, roles, **extra):
    context = {
        "project": project,
        "roles": sorted(roles),
        "can": {a.value: allows(roles, a) for a in Action},
        "boot": {
            "project": {
                "id": project.pk,
                "name": project.name,
                "modality": project.modality,
                "label_classes": project.label_classes,
            },
            "roles": sorted(roles),
            "can": {a.value: allows(roles, a) for a in Action},
            **extra.pop("boot", {}),
        },
        **extra,
    }
    return render(request, template, context)


@login_required
def editor_page(request, project_id: int):
    project, roles = _project(request, project_id, Action.ANNOTATE)
    stats = reader_stats(project=project, reader=request.user)
    return _page(request, "annotations/editor.html", project, roles, boot={"stats": stats})


@login_required
def ml_page(request, project_id: int):
    project, roles = _project(request, project_id, Action.VIEW)
    return _page(
        request,
        "annotations/ml.html",
        project,
        roles,
        strategies=QueryStrategy.choices,
        architectures=list(ARCH_LABELS.items()),
        boot={"settings": _settings(project), "explain_methods": method_catalogue()},
    )


@login_required
def data_page(request, project_id: int):
    project, roles = _project(request, project_id, Action.VIEW)
    return _page(
        request,
        "annotations/data.html",
        project,
        roles,
        links=_links(project.pk),
        role_choices=Role.choices,
        export_formats=ExportFormat.choices,
        export_labels=ExportLabels.choices,
        export_splits=CaseSplit.choices,
        boot={"settings": _settings(project)},
    )


def _settings(project) -> dict:
    return {
        "query_strategy": project.query_strategy,
        "auto_retrain_every": project.auto_retrain_every,
        "gating_tolerance": project.gating_tolerance,
        "readers_per_case": project.readers_per_case,
        "training_config": project.training_config,
    }
