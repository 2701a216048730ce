"""The checkpoint file format without torch: a zip of ``config.json`` and ``weights.pt`` (see `checkpoint`).
The web process reads a version's config and weight bytes through this module (e.g. to package a MONAI
bundle) without loading torch; only `checkpoint` deserialises the weights."""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

FORMAT_VERSION = 1
WEIGHTS_NAME = "weights.pt"
CONFIG_NAME = "config.json"
BUNDLE_BACKEND = "monai_bundle"  # config.json "backend" of an imported MONAI bundle's network (else built-in)
NNUNET_BACKEND = (
    "nnunet"  # config.json "backend" of an nnU-Net v2 network (its plans and dataset.json beside)
)


def checkpoint_parts(data: bytes) -> tuple[dict[str, Any], bytes]:
    """(config.json as a dict, the raw weights.pt bytes). Raises ValueError on a malformed file or an
    unsupported format version."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            config = json.loads(zf.read(CONFIG_NAME))
            weights = zf.read(WEIGHTS_NAME)
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError) as exc:
        raise ValueError(f"not a checkpoint: {exc}") from exc
    if not isinstance(config, dict) or config.get("format") != FORMAT_VERSION:
        got = config.get("format") if isinstance(config, dict) else config
        raise ValueError(f"unsupported checkpoint format {got!r}")
    return config, weights
