"""A model version as a MONAI Bundle (https://docs.monai.io/en/stable/mb_specification.html) that runs outside
the service: `python -m monai.bundle run --config_file configs/inference.json --dataset_dir DIR` segments
every NIfTI file in DIR into `eval/<name>_seg.nii.gz` (labels as uint8 in the source's own voxel grid and
affine), the way the service proposes masks for the same volume imported as slice cases.

Layout of the zip (one top-level folder, the bundle's name):
    configs/metadata.json     MONAI's metadata: versions, the input/output format, label names in the
                              output's channel_def, and `hitl` (the version's provenance)
    configs/inference.json    the pipeline, only MONAI components and expressions over torch/monai
    models/model.pt           the weights: a plain state_dict (torch.save), loadable with weights_only=True
    docs/README.md            what it does, how to run it, where it came from

What the pipeline reproduces (workers.ml.imaging.nifti and workers.ml.models.transforms/inference):
- axial slices of the volume reoriented to RAS, each slice's rows running anterior -> posterior and its
  columns right -> left (nifti.to_slices: flip X and Y, then (Z, Y, X));
- per-slice intensity preparation: CT clipped to [-1000, 1000] HU and scaled to [-1, 1]; any other
  grayscale modality scaled per slice from its 1st (-> 0) to 99th (-> 1) percentile, clipped (constant
  slices -> 0);
- 2.5D context (k > 1): each slice with its k // 2 neighbours on each side, round(context_mm / slice
  spacing) slices apart (at least 1), clamped at the volume's ends, as channels (the slice in the middle);
- edge-replication padding at the end of both in-plane axes to the network's divisor, the network on the
  whole slice in eval mode, softmax, arg-max; the inverse of every spatial step back to the file's grid.
Pure: no Django. RGB images (pathology) are not volumes and have no NIfTI form here: `bundle_spec` refuses.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass, field
from importlib import metadata as dist
from typing import Any

from workers.ml.models.config import NetworkConfig
from workers.ml.models.preparation import CT_WINDOW, PERCENTILES, RGB_MODALITIES

BUNDLE_SCHEMA = (
    "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20220324.json"
)


class BundleError(ValueError):
    """The version cannot be expressed as a bundle (e.g. an RGB model)."""


@dataclass(frozen=True)
class BundleSpec:
    """name: the bundle's folder name (a slug). label_names: index = label value, 0 = background.
    context / context_mm: the 2.5D input (1 = one slice). provenance: JSON-serialisable facts about the
    version (project, version number, training run, metrics, weights hash) for metadata.json."""

    name: str
    version: str
    description: str
    net: NetworkConfig
    modality: str
    label_names: list[str]
    context: int = 1
    context_mm: float | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    network_def: dict[str, Any] | None = None  # an imported bundle's own network (else the built-in U-Net)
    size_divisor: int | None = None  # with network_def: the multiple its input sides must be


def check_exportable(spec: BundleSpec) -> None:
    if spec.modality.upper() in RGB_MODALITIES or spec.net.in_channels != spec.context:
        raise BundleError(
            "only grayscale volume models export as a MONAI bundle (an RGB model reads no NIfTI volume)"
        )
    if spec.network_def is None and spec.net.arch != "unet":
        raise BundleError(f"the {spec.net.arch} architecture does not export as a bundle yet")
    if len(spec.label_names) != spec.net.num_classes:
        raise BundleError(f"{len(spec.label_names)} label names for {spec.net.num_classes} output classes")


def bundle_zip(weights_pt: bytes, spec: BundleSpec) -> bytes:
    """The bundle as zip bytes; raises BundleError when the version cannot be expressed as one.
    `weights_pt`: the state_dict as `torch.save` wrote it (a checkpoint's weights.pt, copied as it is: no
    torch import here, so the web process can build a bundle)."""
    check_exportable(spec)
    files = {
        "configs/metadata.json": json.dumps(metadata(spec), indent=2, sort_keys=True),
        "configs/inference.json": json.dumps(inference_config(spec), indent=2),
        "docs/README.md": readme(spec),
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path, text in files.items():
            zf.writestr(f"{spec.name}/{path}", text)
        zf.writestr(zipfile.ZipInfo(f"{spec.name}/models/model.pt"), weights_pt, zipfile.ZIP_STORED)
    return buf.getvalue()


def network_def(net: NetworkConfig) -> dict[str, Any]:
    """The network as a MONAI component, exactly as workers.ml.models.networks.build_network builds it."""
    return {
        "_target_": "monai.networks.nets.UNet",
        "spatial_dims": 2,
        "in_channels": net.in_channels,
        "out_channels": net.num_classes,
        "channels": list(net.channels),
        "strides": [2] * (len(net.channels) - 1),
        "num_res_units": net.num_res_units,
        "dropout": net.dropout,
        "norm": "instance",
    }


def _normalise(spec: BundleSpec) -> dict[str, Any]:
    if spec.modality.upper() == "CT":
        lo, hi = CT_WINDOW
        return {
            "_target_": "ScaleIntensityRanged",
            "keys": "image",
            "a_min": lo,
            "a_max": hi,
            "b_min": -1.0,
            "b_max": 1.0,
            "clip": True,
        }
    p_lo, p_hi = (p / 100.0 for p in PERCENTILES)
    # Per slice (the last axis): quantiles in float64 as numpy's percentile computes them.
    scale = (
        "$lambda x: torch.stack([((s - lo) / (hi - lo)).clamp(0, 1) if hi > lo else torch.zeros_like(s)"
        " for s in x.float().unbind(-1)"
        f" for lo, hi in [torch.quantile(s.double().flatten(), torch.tensor([{p_lo}, {p_hi}],"
        " dtype=torch.float64)).tolist()]], -1)"
    )
    return {"_target_": "Lambdad", "keys": "image", "func": scale}


def _context(spec: BundleSpec) -> dict[str, Any] | None:
    if spec.context == 1:
        return None
    half = spec.context // 2
    mm = float(spec.context_mm) if spec.context_mm else 0.0
    step = f"(max(1, round({mm} / float(x.pixdim[2]))) if {mm} > 0 and float(x.pixdim[2]) > 0 else 1)"
    stack = (
        "$lambda x: torch.cat([x.index_select(-1, (torch.arange(x.shape[-1]) + d * "
        f"{step}).clamp(0, x.shape[-1] - 1)) for d in range(-{half}, {half} + 1)], 0)"
    )
    return {"_target_": "Lambdad", "keys": "image", "func": stack}


def inference_config(spec: BundleSpec) -> dict[str, Any]:
    divisor = spec.size_divisor or 2 ** (len(spec.net.channels) - 1)
    transforms = [
        {"_target_": "LoadImaged", "keys": "image", "image_only": True},
        {"_target_": "EnsureChannelFirstd", "keys": "image"},
        {
            "_target_": "Orientationd",
            "keys": "image",
            "axcodes": "RAS",
            "labels": [["L", "R"], ["P", "A"], ["I", "S"]],
        },
        {"_target_": "Flipd", "keys": "image", "spatial_axis": [0, 1]},
        {"_target_": "Transposed", "keys": "image", "indices": [0, 2, 1, 3]},  # (1, rows, columns, slices)
        _normalise(spec),
        _context(spec),
        {
            "_target_": "DivisiblePadd",
            "keys": "image",
            "k": [divisor, divisor, 1],
            "mode": "edge",
            "method": "end",
        },
    ]
    return {
        "imports": ["$import glob", "$import os"],
        "bundle_root": ".",
        "dataset_dir": "data",
        "output_dir": "$os.path.join(@bundle_root, 'eval')",
        "datalist": "$sorted(glob.glob(os.path.join(@dataset_dir, '*.nii*')))",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "network_def": spec.network_def or network_def(spec.net),
        "network": "$@network_def.to(@device)",
        "preprocessing": {"_target_": "Compose", "transforms": [t for t in transforms if t is not None]},
        "dataset": {
            "_target_": "Dataset",
            "data": "$[{'image': f} for f in @datalist]",
            "transform": "@preprocessing",
        },
        "inferer": {"_target_": "SliceInferer", "roi_size": [-1, -1], "spatial_dim": 2, "sw_batch_size": 4},
        "postprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "Activationsd", "keys": "pred", "softmax": True},
                {"_target_": "Invertd", "keys": "pred", "transform": "@preprocessing", "orig_keys": "image"},
                {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
                {
                    "_target_": "SaveImaged",
                    "keys": "pred",
                    "output_dir": "@output_dir",
                    "output_postfix": "seg",
                    "output_dtype": "$numpy.uint8",
                    "separate_folder": False,
                    "resample": False,
                },
            ],
        },
        "load_weights": "$@network.load_state_dict(torch.load(os.path.join(@bundle_root, 'models', "
        "'model.pt'), map_location=@device, weights_only=True))",
        "initialize": ["$torch.set_grad_enabled(False)", "@load_weights", "$@network.eval()"],
        "run": [
            "$[@postprocessing(dict(d, pred=@inferer(d['image'][None].to(@device), @network)[0]))"
            " for d in @dataset]"
        ],
    }


def metadata(spec: BundleSpec) -> dict[str, Any]:
    k = spec.net.num_classes
    return {
        "schema": BUNDLE_SCHEMA,
        "version": spec.version,
        "changelog": {spec.version: "exported from the HITL annotation service"},
        "monai_version": _version("monai"),
        "pytorch_version": _version("torch").split("+")[0],
        "numpy_version": _version("numpy"),
        "required_packages_version": {"nibabel": _version("nibabel"), "fire": _version("fire")},
        "name": spec.name,
        "task": "segmentation",
        "description": spec.description,
        "authors": "HITL annotation service (model trained on its project's reader labels)",
        "copyright": "see the project's data licence",
        "intended_use": "research; a proposal for a reader to correct, not a diagnosis",
        "network_data_format": {
            "inputs": {
                "image": {
                    "type": "image",
                    "format": "hounsfield" if spec.modality.upper() == "CT" else "magnitude",
                    "modality": spec.modality,
                    "num_channels": spec.context,
                    "spatial_shape": ["*", "*"],
                    "dtype": "float32",
                    "value_range": [-1, 1] if spec.modality.upper() == "CT" else [0, 1],
                    "is_patch_data": False,
                    "channel_def": {str(i): f"slice {i - spec.context // 2:+d}" for i in range(spec.context)},
                }
            },
            "outputs": {
                "pred": {
                    "type": "image",
                    "format": "segmentation",
                    "num_channels": k,
                    "spatial_shape": ["*", "*"],
                    "dtype": "float32",
                    "value_range": [0, 1],
                    "is_patch_data": False,
                    "channel_def": {str(i): name for i, name in enumerate(spec.label_names)},
                }
            },
        },
        "hitl": spec.provenance,
    }


def readme(spec: BundleSpec) -> str:
    labels = ", ".join(f"{i} = {n}" for i, n in enumerate(spec.label_names))
    return (
        f"# {spec.name}\n\n{spec.description}\n\n"
        "Run it on every NIfTI file in a folder (results in `eval/`, one `<name>_seg.nii.gz` each, in the\n"
        "source's voxel grid and affine):\n\n"
        "    pip install 'monai[nibabel,fire]' torch\n"
        "    python -m monai.bundle run --config_file configs/inference.json --dataset_dir /path/to/folder\n\n"
        f"Labels: {labels}.\nModality: {spec.modality}; input: axial slices"
        + (f" with {spec.context // 2} neighbour(s) each side" if spec.context > 1 else "")
        + ".\n\nProvenance (also in configs/metadata.json, key `hitl`):\n\n"
        f"```json\n{json.dumps(spec.provenance, indent=2, sort_keys=True)}\n```\n"
    )


def _version(distribution: str) -> str:
    try:
        return dist.version(distribution)
    except dist.PackageNotFoundError:
        return "not installed"
