"""A model version as a MONAI bundle (issue 18, item 3): the MONAI bundle CLI runs it on a NIfTI file outside
the service and reproduces the service's proposals; the pipeline matches the service's preparation for CT,
MR and 2.5D input; only ML engineers and admins download it; an RGB model has no bundle form."""

import hashlib
import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from django.core.files.uploadedfile import SimpleUploadedFile

from annotations.models import Case, Role
from hitl.core.models import AuditEvent
from hitl.core.storage import bytes_load, bytes_save, mask_from_png
from tests.helpers import upload_images
from workers.ml.imaging.nifti import to_slices
from workers.ml.models.bundle import BundleError, BundleSpec, bundle_zip, inference_config
from workers.ml.models.checkpoint import checkpoint_to_bytes
from workers.ml.models.inference import predict_labels
from workers.ml.models.networks import NetworkConfig, build_network
from workers.ml.models.transforms import context_indices, context_step, prepare_image
from workers.models import ModelVersion, Prediction
from workers.services.model_export import label_names
from workers.services.proposals import proposals_compute

# Not axis-aligned with RAS (x and y run backwards), anisotropic, sizes no power of two: every step of the
# pipeline (reorientation, flips, the transpose, padding to the divisor and its inverse) has work to do.
AFFINE = np.array([[-1.1, 0, 0, 40.0], [0, -0.9, 0, 30.0], [0, 0, 2.5, -10.0], [0, 0, 0, 1]])


def _volume(shape=(37, 45, 7), *, ct: bool = False) -> np.ndarray:
    rng = np.random.default_rng(0)
    x = np.linspace(0, 1, shape[0])[:, None, None]
    vol = 100 + 200 * x + 40 * rng.normal(size=shape)
    return (vol * 4 - 600 if ct else vol).astype(np.float32)


def _dice(a: np.ndarray, b: np.ndarray, k: int) -> float:
    a, b = a == k, b == k
    return 2 * float((a & b).sum()) / max(1, int(a.sum() + b.sum()))


def _service_labels(model, volume: np.ndarray, affine, modality: str, context: int, context_mm) -> np.ndarray:
    """What the service proposes for each slice of this volume (ingest's slices, the loader's preparation)."""
    canonical = nib.as_closest_canonical(nib.Nifti1Image(volume, affine))
    slices = to_slices(np.asarray(canonical.dataobj, dtype=np.float32))
    step = context_step(float(canonical.header.get_zooms()[2]), context_mm)
    n = slices.shape[0]
    prepared = [
        np.concatenate([prepare_image(slices[j], modality) for j in context_indices(z, n, context, step)], 0)
        for z in range(n)
    ]
    return np.stack(predict_labels(model, prepared))


def _run_in_process(bundle_dir: Path, data_dir: Path) -> None:
    """What `python -m monai.bundle run` does with the config, in this process (seconds, not a new
    interpreter importing torch)."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(bundle_dir / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle_dir)
    parser["dataset_dir"] = str(data_dir)
    for key in ("initialize", "run"):
        parser.get_parsed_content(key)


def _bundle(tmp_path: Path, model, net: NetworkConfig, modality: str, context=1, context_mm=None) -> Path:
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    names = ["background", "organ", "lesion"][: net.num_classes]
    spec = BundleSpec("b", "1.1.0", "test", net, modality, names, context, context_mm, {"model_version": 1})
    zipfile.ZipFile(io.BytesIO(bundle_zip(buf.getvalue(), spec))).extractall(tmp_path)
    return tmp_path / "b"


@pytest.mark.parametrize(
    ("modality", "context", "context_mm"), [("CT", 1, None), ("MR", 1, None), ("MR", 3, 5.0), ("CT", 5, 2.0)]
)
def test_the_bundle_pipeline_labels_every_slice_as_the_service_does(tmp_path, modality, context, context_mm):
    torch.manual_seed(1)
    net = NetworkConfig(in_channels=context, num_classes=3, channels=(4, 8, 16))
    model = build_network(net).eval()
    volume = _volume(ct=modality == "CT")
    data = tmp_path / "data"
    data.mkdir()
    nib.save(nib.Nifti1Image(volume, AFFINE), data / "case.nii.gz")
    bundle = _bundle(tmp_path, model, net, modality, context, context_mm)
    _run_in_process(bundle, data)
    out = nib.load(bundle / "eval" / "case_seg.nii.gz")
    assert out.shape == volume.shape and np.allclose(out.affine, AFFINE)  # the source's own grid
    got = to_slices(np.asarray(nib.as_closest_canonical(out).dataobj))
    want = _service_labels(model, volume, AFFINE, modality, context, context_mm)
    assert (
        len(np.unique(want)) == 3
    )  # a network that labels all three classes: the comparison means something
    assert (got == want).mean() >= 0.999


def test_metadata_names_the_labels_and_the_config_only_names_monai_components(tmp_path):
    net = NetworkConfig(num_classes=3, channels=(4, 8, 16))
    bundle = _bundle(tmp_path, build_network(net), net, "MR")
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert meta["network_data_format"]["outputs"]["pred"]["channel_def"] == {
        "0": "background",
        "1": "organ",
        "2": "lesion",
    }
    assert meta["hitl"] == {"model_version": 1} and meta["version"] == "1.1.0"
    targets = []

    def walk(node):
        if isinstance(node, dict):
            targets.extend([node["_target_"]] if "_target_" in node else [])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(json.loads((bundle / "configs" / "inference.json").read_text()))
    assert targets and all("." not in t or t.startswith("monai.") for t in targets), targets
    state = torch.load(bundle / "models" / "model.pt", weights_only=True)  # plain tensors, no code
    assert set(state) == set(build_network(net).state_dict())


def test_an_rgb_model_or_a_label_mismatch_has_no_bundle_form():
    rgb = NetworkConfig(in_channels=3, num_classes=2)
    with pytest.raises(BundleError, match="grayscale"):
        bundle_zip(b"", BundleSpec("b", "1", "", rgb, "SM", ["background", "nucleus"]))
    with pytest.raises(BundleError, match="label names"):
        bundle_zip(b"", BundleSpec("b", "1", "", NetworkConfig(num_classes=3), "MR", ["background"]))
    assert (
        inference_config(BundleSpec("b", "1", "", NetworkConfig(), "MR", ["bg", "x"]))["network_def"][
            "in_channels"
        ]
        == 1
    )


def test_label_names_fill_the_gaps_of_sparse_values():
    classes = [
        {"value": 1, "name": "liver", "color": "#ff0000"},
        {"value": 3, "name": "kidney", "color": "#00ff00"},
    ]
    assert label_names(classes, 4) == ["background", "liver", "unused 2", "kidney"]


def _version(project, net: NetworkConfig, *, number=1, state="active", seed=1) -> ModelVersion:
    torch.manual_seed(seed)
    data = checkpoint_to_bytes(build_network(net), net)
    return ModelVersion.objects.create(
        project=project,
        number=number,
        state=state,
        weights_path=bytes_save(f"projects/{project.pk}/models/export-v{number}.ckpt", data),
        weights_sha256=hashlib.sha256(data).hexdigest(),
        config={
            "network": net.to_dict(),
            "scoring": {"mc_samples": 2},
            "input": {"context_slices": 1, "context_mm": None},
        },
        metrics={"validation_dice": 0.8, "test_dice": 0.7, "labelled_cases": 12},
    )


@pytest.mark.django_db(transaction=True)
def test_a_downloaded_version_runs_with_the_monai_bundle_cli_and_reproduces_the_services_proposals(
    project, member, dm_client, client_for, tmp_path
):
    project.modality = "MR"
    project.save(update_fields=["modality"])
    volume = _volume()
    source = nib.Nifti1Image(volume, AFFINE).to_bytes()
    upload_images(dm_client, project, {"file": SimpleUploadedFile("volume.nii", source)})
    version = _version(project, NetworkConfig(num_classes=3, channels=(4, 8, 16)))
    cases = list(Case.objects.filter(project=project).order_by("slice_index"))
    assert len(cases) == volume.shape[2]
    assert proposals_compute(version_id=version.pk, case_ids=[c.pk for c in cases]) == len(cases)

    ml = member(Role.ML_ENGINEER)
    resp = client_for(ml).get(f"/api/v1/model-versions/{version.pk}/bundle")
    assert resp.status_code == 200 and resp["Content-Type"] == "application/zip"
    zipfile.ZipFile(io.BytesIO(resp.content)).extractall(tmp_path)
    (bundle,) = [p for p in tmp_path.iterdir() if (p / "configs" / "inference.json").exists()]
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert meta["hitl"]["model_version_id"] == version.pk
    assert meta["hitl"]["checkpoint_sha256"] == version.weights_sha256
    assert AuditEvent.objects.filter(action="model_version.bundle_export", actor=ml).count() == 1

    data = tmp_path / "in"
    data.mkdir()
    (data / "volume.nii").write_bytes(source)
    cli = [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.json"]
    done = subprocess.run(
        [*cli, "--dataset_dir", str(data)], cwd=bundle, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = nib.load(bundle / "eval" / "volume_seg.nii.gz")
    got = to_slices(np.asarray(nib.as_closest_canonical(out).dataobj))
    proposals = {p.case_id: p for p in Prediction.objects.filter(model_version=version)}
    want = np.stack([mask_from_png(bytes_load(proposals[c.pk].mask_path)) for c in cases])
    assert got.shape == want.shape
    dice = {k: _dice(got, want, k) for k in (1, 2)}
    print(
        f"bundle CLI vs the service's proposals: Dice per class {dice}, pixels equal {(got == want).mean():.4f}"
    )
    for k in (1, 2):
        assert (want == k).any() and dice[k] >= 0.99, dice


def test_only_ml_engineers_and_admins_download_a_version_and_rgb_models_are_refused(
    project, member, client_for
):
    version = _version(project, NetworkConfig(num_classes=3, channels=(4, 8, 16)))
    url = f"/api/v1/model-versions/{version.pk}/bundle"
    for role, status in ((Role.ANNOTATOR, 403), (Role.DATA_MANAGER, 403), (Role.ADMIN, 200)):
        assert client_for(member(role)).get(url).status_code == status, role
    from tests.factories import UserFactory

    assert client_for(UserFactory()).get(url).status_code == 404  # not a member: the version does not exist
    rgb_net = NetworkConfig(in_channels=3, num_classes=3, channels=(4, 8, 16))
    rgb = _version(project, rgb_net, number=2, state="candidate", seed=2)
    resp = client_for(member(Role.ML_ENGINEER)).get(f"/api/v1/model-versions/{rgb.pk}/bundle")
    assert resp.status_code == 409 and resp.json()["error"]["code"] == "not_exportable", resp.content
