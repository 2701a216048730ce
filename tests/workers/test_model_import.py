"""Importing a MONAI bundle (issue 18, items 2 and 5): a bundle built here (its own configs, a small network)
imports, is gated, serves proposals and scores the pool; a version exported by the service imports back and
proposes the same masks; malformed, mismatched and unsafe bundles get a 400 with a code and leave nothing
behind; only ML engineers and admins import."""

import io
import json
import zipfile

import numpy as np
import pytest
import torch
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile

from annotations.models import Case, CaseSplit, Role
from hitl.core.models import AuditEvent
from hitl.core.storage import bytes_load, mask_from_png
from tests.factories import ProjectFactory
from tests.workers.test_training_helpers import TINY, seed_project
from workers.models import (
    CaseScore,
    Explanation,
    ModelVersion,
    Prediction,
    RunStatus,
    TrainingRun,
    VersionState,
)
from workers.services.training import training_run_start

UNET = {
    "_target_": "UNet",
    "spatial_dims": 2,
    "in_channels": 1,
    "out_channels": 3,
    "channels": [4, 8, 16],
    "strides": [2, 2],
    "num_res_units": 1,
}
BASIC_UNET = {  # not the built-in layout: its input sides must be multiples of 16, measured at import
    "_target_": "monai.networks.nets.BasicUNet",
    "spatial_dims": 2,
    "in_channels": 1,
    "out_channels": 3,
    "features": [4, 4, 8, 8, 16, 4],
}


def _weights(network_def: dict, seed: int = 0) -> bytes:
    from monai.bundle import ConfigParser

    torch.manual_seed(seed)
    net = ConfigParser({"n": {**network_def, "_target_": network_def["_target_"]}}).get_parsed_content("n")
    buf = io.BytesIO()
    torch.save(net.state_dict(), buf)
    return buf.getvalue()


def make_bundle(
    network_def: dict | None = None,
    *,
    weights: bytes | None = None,
    extra_config: dict | None = None,
    files: dict[str, bytes] | None = None,
    drop: tuple[str, ...] = (),
) -> bytes:
    network_def = network_def or UNET
    config = {
        "imports": ["$import glob", "$import os", "$import torch"],
        "device": "$torch.device('cpu')",
        "network_def": network_def,
        "network": "$@network_def.to(@device)",
        **(extra_config or {}),
    }
    metadata = {
        "version": "0.1.0",
        "name": "toy_bundle",
        "network_data_format": {
            "inputs": {"image": {"num_channels": 1}},
            "outputs": {"pred": {"num_channels": 3, "channel_def": {"0": "background", "1": "a", "2": "b"}}},
        },
    }
    content = {
        "toy/configs/metadata.json": json.dumps(metadata).encode(),
        "toy/configs/inference.json": json.dumps(config).encode(),
        "toy/models/model.pt": weights if weights is not None else _weights(network_def),
        **(files or {}),
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in content.items():
            if name not in drop:
                zf.writestr(name, data)
    return buf.getvalue()


@pytest.fixture
def ml(member):
    return member(Role.ML_ENGINEER)


def _post(client, project, data: bytes):
    upload = SimpleUploadedFile("bundle.zip", data, content_type="application/zip")
    return client.post(f"/api/v1/projects/{project.pk}/model-bundles", {"file": upload}, format="multipart")


@pytest.mark.parametrize("network_def", [UNET, BASIC_UNET], ids=["UNet", "BasicUNet"])
def test_a_bundle_imports_is_gated_serves_proposals_and_scores_the_pool(
    project, ml, client_for, network_def, django_capture_on_commit_callbacks
):
    cases = seed_project(project, ml)
    with django_capture_on_commit_callbacks(execute=True):  # eager Celery: the import runs on commit
        resp = _post(client_for(ml), project, make_bundle(network_def))
    assert resp.status_code == 202, resp.content
    run = TrainingRun.objects.get(pk=resp.json()["id"])
    assert run.trigger == "bundle" and run.status == RunStatus.SUCCEEDED, run.outcome
    version = run.result_version
    assert version.state == VersionState.ACTIVE and "first active version" in run.outcome
    assert version.config["backend"] == "monai_bundle" and version.metrics["imported_bundle"] is True
    assert 0 <= version.metrics["validation_dice"] <= 1 and version.metrics["validation_cases"] == 2
    pool = [c.pk for c in cases["pool"]]
    assert CaseScore.objects.filter(model_version=version, case_id__in=pool).count() == len(pool)
    assert Prediction.objects.filter(model_version=version).exists()  # the queue head's proposals
    maps = set(Explanation.objects.filter(model_version=version).values_list("method", flat=True))
    assert {"gradcam", "saliency"} <= maps, maps  # explained like a trained version, whatever the network
    event = AuditEvent.objects.get(action="model_bundle.import")
    target = network_def["_target_"]
    assert event.details["network"] == (target if "." in target else f"monai.networks.nets.{target}")


def test_an_exported_version_imports_back_and_proposes_the_same_masks(
    project, ml, client_for, django_capture_on_commit_callbacks
):
    cases = seed_project(project, ml)
    with django_capture_on_commit_callbacks(execute=True):
        trained = training_run_start(project=project, requested_by=ml, config_overrides=TINY)
    trained.refresh_from_db()
    source = trained.result_version
    exported = client_for(ml).get(f"/api/v1/model-versions/{source.pk}/bundle").content

    other = ProjectFactory(modality=project.modality, label_classes=project.label_classes)
    from tests.factories import MembershipFactory

    MembershipFactory(project=other, user=ml, role=Role.ML_ENGINEER)
    twin = seed_project(other, ml)
    with django_capture_on_commit_callbacks(execute=True):
        resp = _post(client_for(ml), other, exported)
    assert resp.status_code == 202, resp.content
    run = TrainingRun.objects.get(pk=resp.json()["id"])
    assert run.status == RunStatus.SUCCEEDED, run.outcome
    imported = run.result_version
    assert imported.metrics["validation_dice"] == pytest.approx(source.metrics["validation_dice"], abs=1e-6)
    from workers.services.proposals import proposals_compute

    a = [c.pk for c in cases["test"]]
    b = [c.pk for c in twin["test"]]  # the same phantoms, seeded the same way
    proposals_compute(version_id=source.pk, case_ids=a)
    proposals_compute(version_id=imported.pk, case_ids=b)
    for pa, pb in zip(a, b, strict=True):
        ma = mask_from_png(bytes_load(Prediction.objects.get(case_id=pa, model_version=source).mask_path))
        mb = mask_from_png(bytes_load(Prediction.objects.get(case_id=pb, model_version=imported).mask_path))
        assert np.array_equal(ma, mb)


REFUSED = [
    ("not a zip", lambda: b"PK but not a zip", "not_a_bundle"),
    ("no metadata", lambda: make_bundle(drop=("toy/configs/metadata.json",)), "not_a_bundle"),
    ("no network_def", lambda: make_bundle(extra_config={"network_def": "$None"}), "no_network"),
    ("label count", lambda: make_bundle({**UNET, "out_channels": 2}), "label_mismatch"),
    ("channel count", lambda: make_bundle({**UNET, "in_channels": 3}), "channel_mismatch"),
    ("imports subprocess", lambda: make_bundle(extra_config={"x": "$import subprocess"}), "unsafe_config"),
    (
        "arbitrary target",
        lambda: make_bundle({**UNET, "_target_": "scripts.net.Net"}, weights=b"x"),
        "unsafe_config",
    ),
    (
        "os.system elsewhere",
        lambda: make_bundle(extra_config={"run": {"_target_": "os.system"}}),
        "unsafe_config",
    ),
    (
        "a file-writing function nested in network_def",
        lambda: make_bundle(
            {**UNET, "act": {"_target_": "monai.networks.utils.save_state", "src": {}}}, weights=b"x"
        ),
        "unsafe_config",
    ),
    ("dunder escape", lambda: make_bundle(extra_config={"x": "$().__class__.__base__"}), "unsafe_config"),
    ("expression in network", lambda: make_bundle({**UNET, "channels": "$[4, 8, 16]"}), "unsafe_config"),
    ("3D network", lambda: make_bundle({**UNET, "spatial_dims": 3}, weights=b"x"), "unsupported_network"),
    ("path traversal", lambda: make_bundle(files={"toy/../../evil.txt": b"x"}), "unsafe_archive"),
    (
        "TorchScript only",
        lambda: make_bundle(drop=("toy/models/model.pt",), files={"toy/models/model.ts": b"x"}),
        "no_weights",
    ),
]


@pytest.mark.parametrize(("what", "build", "code"), REFUSED, ids=[r[0] for r in REFUSED])
def test_a_refused_bundle_gets_a_400_with_its_code_and_nothing_is_registered(
    project, ml, client_for, what, build, code
):
    seed_project(project, ml)
    resp = _post(client_for(ml), project, build())
    assert resp.status_code == 400, (what, resp.content)
    assert resp.json()["error"]["code"] == code, (what, resp.json())
    assert not TrainingRun.objects.exists() and not ModelVersion.objects.exists()
    assert not default_storage.exists(f"projects/{project.pk}/bundles")


def test_weights_that_do_not_fit_the_network_end_the_run_failed_with_the_reason(
    project, ml, client_for, django_capture_on_commit_callbacks
):
    seed_project(project, ml)
    wrong = _weights({**UNET, "channels": [8, 16, 32]})
    with django_capture_on_commit_callbacks(execute=True):
        resp = _post(client_for(ml), project, make_bundle(weights=wrong))
    assert resp.status_code == 202
    run = TrainingRun.objects.get(pk=resp.json()["id"])
    assert run.status == RunStatus.FAILED and run.outcome.startswith("the bundle was refused: the weights")
    assert not ModelVersion.objects.exists()


def test_only_ml_engineers_and_admins_import(project, member, client_for):
    seed_project(project, member(Role.ML_ENGINEER))
    for role in (Role.ANNOTATOR, Role.DATA_MANAGER):
        assert _post(client_for(member(role)), project, make_bundle()).status_code == 403, role
    assert not TrainingRun.objects.exists()
    assert Case.objects.filter(project=project, split=CaseSplit.POOL).exists()


def test_a_damaged_or_strange_bundle_is_refused_never_a_crash():
    """Every byte flip of a good bundle, and metadata of every wrong shape: a BundleRejected or a pass."""
    from workers.ml.models.bundle_check import BundleRejected, check_bundle

    good = make_bundle(weights=b"w" * 64)
    rng = np.random.default_rng(0)
    for _ in range(300):
        bad = bytearray(good)
        for i in rng.integers(0, len(bad), 3):
            bad[i] = int(rng.integers(0, 256))
        try:
            check_bundle(bytes(bad), max_uncompressed=1 << 20)
        except BundleRejected:
            pass
    for meta, refused in (
        ([], True),
        ({"network_data_format": []}, False),
        ({"network_data_format": {"inputs": "x", "outputs": [1]}}, False),
    ):
        bundle = make_bundle(weights=b"w", files={"toy/configs/metadata.json": json.dumps(meta).encode()})
        if refused:
            with pytest.raises(BundleRejected):
                check_bundle(bundle, max_uncompressed=1 << 20)
        else:  # the channels come from network_def
            assert check_bundle(bundle, max_uncompressed=1 << 20).out_channels == 3
    for network in ({**UNET, "spatial_dims": "x"}, {**UNET, "in_channels": None}, {**UNET, "_target_": 3}):
        with pytest.raises(BundleRejected):
            check_bundle(make_bundle(network, weights=b"w"), max_uncompressed=1 << 20)


def test_the_worker_builds_only_torch_module_classes():
    """Under an allowed prefix, a function (torch.nn.functional.relu) is still refused: building the network
    must only construct layers."""
    from workers.ml.models.bundle_check import BundleRejected
    from workers.ml.models.bundle_network import build_bundle_network

    function = {
        **UNET,
        "_target_": "monai.networks.nets.UNet",
        "act": {"_target_": "torch.nn.functional.relu"},
    }
    with pytest.raises(BundleRejected) as err:
        build_bundle_network(function)
    assert err.value.code == "unsafe_config"
    missing = {**UNET, "_target_": "monai.networks.nets.NoSuchNet"}
    with pytest.raises(BundleRejected, match="does not exist"):
        build_bundle_network(missing)
    assert build_bundle_network({**UNET, "_target_": "monai.networks.nets.UNet"}).training is False


def test_an_imported_bundle_is_fine_tuned_in_the_loop_and_its_version_still_exports(
    project, ml, client_for, django_capture_on_commit_callbacks
):
    """Issue 18, item 2: a project whose backend is "monai_bundle" fine-tunes its imported bundle's network
    with the service's trainer; the new version keeps the bundle's network (so it exports as a bundle)."""
    from workers.ml.models.checkpoint import read_checkpoint
    from workers.services.weights import weights_bytes

    seed_project(project, ml)
    with django_capture_on_commit_callbacks(execute=True):
        resp = _post(client_for(ml), project, make_bundle(UNET))
    imported = TrainingRun.objects.get(pk=resp.json()["id"]).result_version
    with django_capture_on_commit_callbacks(execute=True):
        run = training_run_start(
            project=project, requested_by=ml, config_overrides={**TINY, "backend": "monai_bundle"}
        )
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED, run.outcome
    assert run.base_version_id == imported.pk and run.config["train"]["epochs"] == TINY["epochs"]
    tuned = run.result_version
    assert tuned.backend == "monai_bundle" and tuned.config["bundle"]["fine_tunes"] == imported.pk
    assert tuned.config["network"] == imported.config["network"]
    assert tuned.metrics["fine_tuned_bundle"] is True and tuned.metrics["epochs_run"] == TINY["epochs"]
    before, _c, _m = read_checkpoint(weights_bytes(imported))
    after, _c, _m = read_checkpoint(weights_bytes(tuned))
    assert before.keys() == after.keys()  # the bundle's own network, trained further
    assert any(not torch.equal(before[k], after[k]) for k in before)
    bundle = client_for(ml).get(f"/api/v1/model-versions/{tuned.pk}/bundle")
    assert bundle.status_code == 200
    with zipfile.ZipFile(
        io.BytesIO(b"".join(bundle.streaming_content) if bundle.streaming else bundle.content)
    ) as zf:
        assert any(n.endswith("configs/inference.json") for n in zf.namelist())
    listed = client_for(ml).get(f"/api/v1/projects/{project.pk}/model-versions").json()["results"]
    assert sorted(v["backend"] for v in listed) == ["monai_bundle", "monai_bundle"]


def test_fine_tuning_a_bundle_without_one_is_refused_with_the_reason(project, ml):
    from django.core.exceptions import ValidationError

    seed_project(project, ml)
    with pytest.raises(ValidationError, match="import a bundle"):
        training_run_start(project=project, requested_by=ml, config_overrides={"backend": "monai_bundle"})
    assert not TrainingRun.objects.exists()
