"""What every project page passes to its template: the project, the caller's roles and what they may do,
and a `boot` object the page's script reads at start."""

from django.shortcuts import render

from hitl.core.permissions import Action, allows


def render_project_page(request, template: str, project, roles, **extra):
    """`extra["boot"]` is merged into the boot object; the other `extra` items go to the template."""
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
