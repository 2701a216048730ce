"""nnU-Net v2 as a model backend (issue 18, item 4): a project whose training config says
{"backend": "nnunet"} trains nnU-Net (its dataset conversion, fingerprint, plan, preprocessing and trainer,
on a CPU with a short schedule) on the MNI152 white-matter slices of DATA.md; the version is registered,
gated, proposes, scores the pool and is explained like a built-in one. The service runs nnU-Net's network
as a torch module whose output equals nnU-Net's own predictor's."""

import numpy as np
import pytest
import torch
from django.core.exceptions import ValidationError

from annotations.models import CaseSplit, Role
from tests.workers.test_training_helpers import add_case
from workers.models import CaseScore, Explanation, Prediction, RunStatus, TrainingRun, VersionState
from workers.services.training import training_run_start
from workers.services.training_config import training_config_build, training_config_validate

SHORT = {"backend": "nnunet", "nnunet_epochs": 2, "nnunet_iterations": 10, "mc_samples": 2, "seed": 0}


def _wm():
    from workers.ml.research.wm_task import load_wm_slices

    return load_wm_slices()  # 16 axial MNI152 slices, 96 x 96, white matter = 1


def _dice(pred: np.ndarray, truth: np.ndarray) -> float:
    return float(2 * ((pred == 1) & (truth == 1)).sum() / max(1, (pred == 1).sum() + (truth == 1).sum()))


def test_the_backend_is_a_checked_choice_and_its_run_never_warm_starts(project):
    assert training_config_validate(SHORT) == SHORT
    with pytest.raises(ValidationError, match="backend must be one of builtin, nnunet"):
        training_config_validate({"backend": "nnunet3d"})
    with pytest.raises(ValidationError, match="nnunet_iterations"):
        training_config_validate({"nnunet_iterations": 0})
    config = training_config_build(project=project, overrides=SHORT, seed=0)
    assert config["backend"] == "nnunet" and config["nnunet"] == {"epochs": 2, "iterations": 10}
    assert config["warm_start"] is False
    assert "backend" not in training_config_build(project=project, overrides={}, seed=0)  # built-in


@pytest.mark.slow
def test_the_service_module_predicts_what_nnunets_own_predictor_does(tmp_path):
    from workers.ml.models import nnunet

    data = _wm()
    images, masks, held_images, held_masks = data.split()
    cases = [nnunet.NnunetCase(f"case_{i:03d}", images[i], masks[i]) for i in range(len(images))]
    nnunet.raw_dataset_write(tmp_path, 3, "wm", cases, ["channel_0"], ["background", "white_matter"])
    epochs: list[int] = []
    result = nnunet.fit_in_subprocess(
        tmp_path,
        3,
        nnunet.NnunetSchedule(epochs=2, iterations=10),
        progress=lambda e, n, loss: epochs.append(e),
    )
    assert result.model_dir is not None, result.error
    assert epochs == [1, 2] and result.plan["normalization_schemes"] == ["ZScoreNormalization"]
    model, _plans, _dataset = nnunet.trained_load(result.model_dir)
    with nnunet.nnunet_folders(tmp_path):
        predictor = nnunet.predictor_load(result.model_dir, mirroring=False)
        for image, truth in zip(held_images, held_masks, strict=True):
            with torch.no_grad():
                ours = model(torch.from_numpy(image[None])).argmax(1)[0].numpy()
            probs = nnunet.predict_probabilities(predictor, image)
            assert probs.shape == (2, *image.shape[1:]) and np.allclose(probs.sum(0), 1.0, atol=1e-4)
            theirs = probs.argmax(0)
            assert (ours == theirs).mean() >= 0.999  # the same network and normalisation, pixel for pixel
            assert _dice(ours, truth) > 0.5  # and it learned the task in 20 steps (0.87-0.90 measured)


@pytest.mark.slow
def test_an_nnunet_run_trains_registers_proposes_scores_and_explains(
    project, member, client_for, django_capture_on_commit_callbacks
):
    from workers.ml.models.nnunet_network import NnunetNetwork
    from workers.services.weights import model_load

    project.modality = "MR"
    project.label_classes = [{"value": 1, "name": "white matter", "color": "#ffffff"}]
    project.save()
    ml = member(Role.ML_ENGINEER)
    data = _wm()
    splits = [CaseSplit.TRAIN] * 8 + [CaseSplit.VALIDATION] * 2 + [CaseSplit.TEST] * 2 + [CaseSplit.POOL] * 4
    pool = []
    for image, mask, split in zip(data.images, data.masks, splits, strict=True):
        labelled = split != CaseSplit.POOL
        case = add_case(project, user=ml, image=image[0], mask=mask if labelled else None, split=split)
        pool += [] if labelled else [case.pk]
    with django_capture_on_commit_callbacks(execute=True):  # eager Celery: the run executes on commit
        run = training_run_start(project=project, requested_by=ml, config_overrides=SHORT)
    run = TrainingRun.objects.get(pk=run.pk)
    assert run.status == RunStatus.SUCCEEDED, run.outcome
    assert [e["epoch"] for e in run.epochs] == [1, 2]  # nnU-Net's epochs reported as the run's progress
    version = run.result_version
    assert version.state == VersionState.ACTIVE
    assert version.config["backend"] == "nnunet" and version.metrics["backend"] == "nnunet"
    assert version.metrics["nnunet_plan"]["patch_size"]  # nnU-Net's own plan, recorded
    assert version.metrics["validation_dice"] > 0.5 and version.metrics["validation_cases"] == 2
    assert isinstance(model_load(version), NnunetNetwork)
    scores = CaseScore.objects.filter(model_version=version, case_id__in=pool)
    assert scores.count() == len(pool)
    # Its network has no dropout: uncertainty comes from mirror TTA (MC samples would all be equal, BALD 0)
    assert version.metrics["validation_calibration_mc"]["sampling"] == "mirror"
    assert all(s.components["bald"] > 0 for s in scores), [s.components for s in scores]
    assert Prediction.objects.filter(model_version=version).exists()
    methods = set(Explanation.objects.filter(model_version=version).values_list("method", flat=True))
    assert {"gradcam", "saliency"} <= methods, methods
    resp = client_for(ml).get(f"/api/v1/model-versions/{version.pk}/bundle")
    assert resp.status_code == 409 and resp.json()["error"]["code"] == "not_exportable", resp.content
