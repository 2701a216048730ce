"""2.5D input in the service (`context_slices`, 2D by default): a project of volumes that chooses it trains,
gates, proposes, scores and explains with each slice's neighbours as input channels; versions read cases
the way they were trained, also across a switch between 2D and 2.5D."""

import hashlib
import uuid

import numpy as np
import pytest
from django.core.exceptions import ValidationError

from annotations.models import AnnotationKind, Case, CaseSplit, Image, ImageStatus, Role
from hitl.core.storage import array_to_bytes, bytes_save
from tests.workers.test_training_helpers import SPEC, TINY, annotate, seed_project
from workers.ml.models.transforms import prepare_context
from workers.ml.research.phantoms import make_phantoms
from workers.models import CaseScore, Explanation, Prediction, RunStatus, VersionState
from workers.services import training as training_service
from workers.services.datasets import SliceLoader, labelled_images, loader_for
from workers.services.training import training_run_start
from workers.services.training_config import config_json_schema, training_config_validate
from workers.services.training_run import training_run_execute

SPLITS = [CaseSplit.TRAIN] * 6 + [CaseSplit.VALIDATION] * 2 + [CaseSplit.TEST] * 2 + [CaseSplit.POOL] * 4


@pytest.fixture
def ml(member):
    return member(Role.ML_ENGINEER)


def seed_volume(project, user) -> list[Case]:
    """One 14-slice MR volume, one case per slice (train, validation, test labelled; pool not)."""
    batch = make_phantoms(len(SPLITS), seed=3, spec=SPEC)
    pixels = np.stack(batch.images).astype(np.float32)
    data = array_to_bytes(pixels)
    digest = hashlib.sha256(data + uuid.uuid4().bytes).hexdigest()
    img = Image.objects.create(
        project=project,
        display_name="volume",
        source_kind="nifti",
        modality="MR",
        pixels_path=bytes_save(f"projects/{project.pk}/images/{digest[:16]}/pixels.npy", data),
        shape=list(pixels.shape),
        dtype="float32",
        spacing=[1.0, 1.0, 2.0],
        content_hash=digest,
        status=ImageStatus.READY,
        created_by=user,
    )
    cases = []
    for z, split in enumerate(SPLITS):
        case = Case.objects.create(project=project, image=img, slice_index=z, split=split)
        if split != CaseSplit.POOL:
            annotate(case, mask=batch.masks[z], user=user, kind=AnnotationKind.REFERENCE)
        cases.append(case)
    return cases


def test_the_slice_loader_stacks_neighbours_of_the_volume_as_prepare_context_does(project, ml):
    cases = seed_volume(project, ml)
    vol = np.stack(make_phantoms(len(SPLITS), seed=3, spec=SPEC).images).astype(np.float32)
    loader = SliceLoader(context=3)
    for case in (cases[0], cases[5], cases[-1]):
        np.testing.assert_array_equal(loader.prepared(case), prepare_context(vol, case.slice_index, 3, "MR"))
    assert SliceLoader().prepared(cases[5]).shape == (1, 32, 32)
    assert loader_for({}).context == 1  # a version from before 2.5D reads one slice
    assert loader_for({"input": {"context_slices": 5}}).prepared(cases[0]).shape == (5, 32, 32)
    ids = [cases[7].pk, cases[6].pk]
    got = labelled_images(ids, config={"input": {"context_slices": 3}})
    np.testing.assert_array_equal(got[0], prepare_context(vol, 7, 3, "MR"))
    # neighbours about 4 mm apart in this 2 mm volume: every second slice
    far = SliceLoader(context=3, context_mm=4.0).prepared(cases[5])
    np.testing.assert_array_equal(far, prepare_context(vol, 5, 3, "MR", step=2))
    with pytest.raises(ValueError):
        SliceLoader(context=2)


def test_neighbours_lie_the_median_slice_spacing_apart_in_every_volume(project, ml):
    from workers.ml.models.transforms import context_step
    from workers.services.training_config import context_mm_for

    assert context_mm_for(project) is None  # no volume: no 2.5D distance
    seed_volume(project, ml)
    for spacing in ([1.0, 1.0, 6.0], [1.0, 1.0, 6.0], [0.8, 0.8, 1.5]):
        img = Image.objects.filter(project=project).first()
        img.pk, img.content_hash, img.spacing = None, uuid.uuid4().hex, spacing
        img.save()
    assert context_mm_for(project) == 4.0  # median of 2, 6, 6, 1.5
    assert [context_step(1.5, 4.0), context_step(6.0, 4.0), context_step(2.0, 4.0)] == [3, 1, 2]
    assert context_step(None, 4.0) == context_step(2.0, None) == 1


def test_a_volume_project_trains_and_serves_2_5d_and_the_whole_chain_follows(
    project, ml, django_capture_on_commit_callbacks
):
    cases = seed_volume(project, ml)
    with django_capture_on_commit_callbacks(execute=True):
        run = training_run_start(
            project=project, requested_by=ml, config_overrides={**TINY, "context_slices": 3}
        )
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED, run.outcome
    assert run.config["input"] == {"context_slices": 3, "context_mm": 2.0, "channels_per_slice": 1}
    assert run.config["network"]["in_channels"] == 3
    version = run.result_version
    assert version.state == VersionState.ACTIVE and 0 <= version.metrics["validation_dice"] <= 1
    pool = {c.pk for c in cases if c.split == CaseSplit.POOL}
    test = {c.pk for c in cases if c.split == CaseSplit.TEST}
    assert set(CaseScore.objects.filter(model_version=version).values_list("case_id", flat=True)) == pool
    assert (
        set(Prediction.objects.filter(model_version=version).values_list("case_id", flat=True)) == pool | test
    )
    assert Explanation.objects.filter(model_version=version).count() == 2 * len(pool)


def test_one_slice_by_default_and_the_context_is_an_odd_override(project, ml, monkeypatch):
    monkeypatch.setattr(training_service, "_enqueue_execute", lambda run_id: None)
    seed_project(project, ml)
    run = training_run_start(project=project, requested_by=ml, config_overrides=TINY)
    assert run.config["input"]["context_slices"] == 1 and run.config["network"]["in_channels"] == 1
    run.delete()
    run = training_run_start(project=project, requested_by=ml, config_overrides={**TINY, "context_slices": 5})
    assert run.config["input"]["context_slices"] == 5 and run.config["network"]["in_channels"] == 5
    for bad in (2, 0, 9, "3", True):
        with pytest.raises(ValidationError, match="context_slices"):
            training_config_validate({"context_slices": bad})
    schema = config_json_schema()["anyOf"][0]["properties"]["context_slices"]
    assert schema["enum"] == [1, 3, 5, 7] and schema["type"] == "integer"


def test_gating_reads_validation_cases_the_way_each_version_was_trained(project, ml, monkeypatch):
    """A 2D version is active; a 2.5D run must be compared with it on the same cases, each model reading
    them its own way (no fine-tuning across the switch: a 1-channel network cannot start a 3-channel one)."""
    monkeypatch.setattr(training_service, "_enqueue_execute", lambda run_id: None)
    monkeypatch.setattr("workers.services.registry._enqueue_scoring", lambda p, v: None)
    seed_volume(project, ml)
    first = training_run_start(
        project=project, requested_by=ml, config_overrides={**TINY, "context_slices": 1}
    )
    v1 = training_run_execute(run_id=first.pk).result_version
    assert v1.state == VersionState.ACTIVE and v1.config["network"]["in_channels"] == 1
    second = training_run_start(
        project=project, requested_by=ml, config_overrides={**TINY, "context_slices": 3}
    )
    assert second.base_version is None and second.config["input"]["context_slices"] == 3
    second = training_run_execute(run_id=second.pk)
    assert second.status == RunStatus.SUCCEEDED, second.outcome
    gate = second.result_version.metrics.get("active_on_validation") or {}
    assert gate.get("version_id") == v1.pk and 0 <= gate["validation_dice"] <= 1, (
        second.result_version.metrics
    )
