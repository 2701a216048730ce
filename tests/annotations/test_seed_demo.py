import io

import pytest
from django.core.management import call_command

from annotations.models import AnnotationKind, Case, Project
from hitl.demo.management.commands.seed_demo import DEMO_PROJECT


@pytest.mark.django_db
def test_seed_demo_builds_real_mri_project_idempotently():
    out = io.StringIO()
    call_command("seed_demo", stdout=out)
    project = Project.objects.get(name=DEMO_PROJECT)
    cases = Case.objects.filter(project=project)
    assert cases.filter(split="pool").count() == 34
    labelled = cases.exclude(current_annotation=None)
    assert set(labelled.values_list("split", flat=True)) == {"train", "validation", "test"}
    assert cases.filter(split="train").count() == 9
    assert all(c.current_annotation.kind == AnnotationKind.REFERENCE for c in labelled)
    # real anatomy: both tissue classes present in the reference masks of a mid-brain slice
    counts = labelled.order_by("slice_index").last().current_annotation.label_counts
    assert int(counts.get("1", 0)) > 500 and int(counts.get("2", 0)) > 500
    roles = set(project.memberships.values_list("role", flat=True))
    assert roles == {"admin", "annotator", "ml_engineer", "data_manager"}
    assert "demo_annotator" in out.getvalue()
    from workers.models import TrainingRun

    run = TrainingRun.objects.get(project=project)  # the first model is queued for the worker
    from workers.selectors.settings import training_settings_for

    settings = training_settings_for(project)
    assert (settings.query_strategy, settings.auto_retrain_every) == ("entropy", 10)
    assert run.trigger == "seed" and run.status == "queued"
    call_command("seed_demo", stdout=io.StringIO())
    assert Project.objects.filter(name=DEMO_PROJECT).count() == 1 and Case.objects.count() == cases.count()
