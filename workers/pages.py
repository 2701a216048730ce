"""Server-rendered pages of the machine side: the ML engineer page (training, model versions, explanation
settings) and the data manager page (imports and exports). Thin shells: the pages fetch their data from the
JSON API with the session cookie."""

from django.contrib.auth.decorators import login_required
from django.urls import NoReverseMatch, reverse

from annotations.models import CaseSplit, Role
from annotations.selectors.projects import project_for_page
from hitl.core.pages import render_project_page
from hitl.core.permissions import Action
from workers.ml.explain.policy import ARCH_LABELS, method_catalogue
from workers.models import ExportFormat, ExportLabels, QueryStrategy
from workers.services.training_config import BACKEND_LABELS

# Pages that other issues add (exports, agreement); linked when their URL names exist.
OPTIONAL_LINKS = [
    ("agreement-page", "Inter-observer agreement"),
    ("agreement-dashboard", "Inter-observer agreement"),
    ("export-page", "Exports"),
    ("exports-page", "Exports"),
]


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


@login_required
def ml_page(request, project_id: int):
    project, roles = project_for_page(user=request.user, project_id=project_id, action=Action.VIEW)
    return render_project_page(
        request,
        "annotations/ml.html",
        project,
        roles,
        strategies=QueryStrategy.choices,
        architectures=list(ARCH_LABELS.items()),
        backends=list(BACKEND_LABELS.items()),
        # The settings themselves are loaded (and saved) by the page through the training-settings API.
        boot={"explain_methods": method_catalogue()},
    )


@login_required
def data_page(request, project_id: int):
    project, roles = project_for_page(user=request.user, project_id=project_id, action=Action.VIEW)
    return render_project_page(
        request,
        "annotations/data.html",
        project,
        roles,
        links=_links(project.pk),
        role_choices=Role.choices,
        export_formats=ExportFormat.choices,
        export_labels=ExportLabels.choices,
        export_splits=CaseSplit.choices,
        boot={
            "settings": {
                k: getattr(project, k)
                for k in (
                    "readers_per_case",
                    "multi_read_share",
                    "multi_read_readers",
                    "routing_share",
                    "routing_readers",
                    "unit_slices",
                    "unit_score",
                )
            }
        },
    )
