"""Check an uploaded MONAI Bundle before anything is stored or run. Pure Python (zip, JSON/YAML): no torch, so
the web process answers a bad bundle with a 4xx at once; the worker builds the network only from what passed.

An imported bundle is data, not code:
- the archive: a zip of at most MAX_MEMBERS files and `max_uncompressed` bytes, no absolute path or `..`,
  one bundle root (`[name/]configs/metadata.json`) at most one folder deep;
- `configs/metadata.json`: a JSON object; `configs/inference.json` (or .yaml): its `network_def`;
- every import the config names (its "imports" list, any "$import x" / "$from x import y" expression) and
  every `_target_` anywhere in it must lie inside torch or monai, plus numpy and the three standard modules
  MONAI Model Zoo bundles use to list their input files (glob, os, pathlib); an expression that reaches for
  other modules another way (`__import__`, `importlib`, `exec`, `eval`, `open`, `compile`, `getattr`,
  `system(`, `popen`) is refused. Nothing outside `network_def` is ever evaluated here: these rules refuse a
  bundle that asks for more than a model needs, they are not what keeps the service safe;
- `network_def` must be literal: its `_target_` a network of `monai.networks.nets` (a short name such as
  "UNet" means that module), nested `_target_`s inside `monai.networks` or `torch.nn`, `@id` references to
  literal values only, no "$" expression; `spatial_dims` 2 (volumes in 3D are not served yet); the worker
  then builds only `_target_`s that are torch modules (no function is called: `monai.networks.utils`
  holds functions that write files);
- `models/model.pt` present (weights; loaded later with `torch.load(weights_only=True)`); TorchScript
  (`model.ts`) alone is refused: it is code.
Every refusal is a `BundleRejected` with a code and a message a user can act on.
"""

from __future__ import annotations

import io
import json
import posixpath
import re
import zipfile
import zlib
from dataclasses import dataclass, field
from typing import Any

MAX_MEMBERS = 2_000
MAX_CONFIG_BYTES = 4 * 1024 * 1024
ALLOWED_ROOTS = ("torch", "monai")
ALLOWED_IMPORTS = (*ALLOWED_ROOTS, "numpy", "glob", "os", "pathlib")  # the zoo's "$import glob", "$import os"
NETWORKS = "monai.networks.nets."
NESTED_TARGETS = ("monai.networks.nets.", "monai.networks.blocks.", "monai.networks.layers.", "torch.nn.")
_IMPORT = re.compile(r"^\s*(?:import\s+([\w.]+)|from\s+([\w.]+)\s+import\b)")
# A built-in called bare (not a method: `@network.eval()` is fine), or a name that reaches for processes.
_BARE_CALL = re.compile(
    r"(?<![\w.])(exec|eval|open|compile|getattr|setattr|globals|locals|vars|breakpoint)\s*\("
)
_REACH = re.compile(r"\b(importlib|subprocess|system|popen|spawn\w*|exec[lv]\w*)\b|__")
_REF = re.compile(r"^@([\w#]+)$")


class BundleRejected(ValueError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class CheckedBundle:
    """What the worker needs: the literal network definition (its `_target_` fully qualified), the channel
    counts, label names from the output's channel_def, the weights' bytes and whether a training config
    came with it."""

    name: str
    version: str
    network_def: dict[str, Any]
    in_channels: int
    out_channels: int
    weights: bytes
    label_names: dict[int, str] = field(default_factory=dict)
    has_train_config: bool = False


def check_bundle(data: bytes, *, max_uncompressed: int) -> CheckedBundle:
    try:
        return _check(data, max_uncompressed)
    except BundleRejected:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError, ValueError):
        raise BundleRejected(
            "not_a_bundle", "the zip is damaged or uses a compression it cannot read"
        ) from None


def _check(data: bytes, max_uncompressed: int) -> CheckedBundle:
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise BundleRejected("not_a_bundle", "a MONAI bundle is uploaded as a zip file") from None
    with zf:
        root = _root(zf, max_uncompressed)
        metadata = _json_object(_read(zf, root + "configs/metadata.json"), "configs/metadata.json")
        config = _inference_config(zf, root)
        _check_config(config)
        network = _network_def(config)
        if root + "models/model.pt" not in zf.namelist():
            hint = (
                " (TorchScript model.ts is code and is not accepted)"
                if root + "models/model.ts" in zf.namelist()
                else ""
            )
            raise BundleRejected("no_weights", f"the bundle has no models/model.pt{hint}")
        weights = zf.read(root + "models/model.pt")
        has_train = any(root + f"configs/train.{ext}" in zf.namelist() for ext in ("json", "yaml", "yml"))
    in_ch, out_ch = _channels(network, metadata)
    return CheckedBundle(
        name=str(metadata.get("name") or root.rstrip("/") or "bundle")[:100],
        version=str(metadata.get("version", ""))[:40],
        network_def=network,
        in_channels=in_ch,
        out_channels=out_ch,
        weights=weights,
        label_names=_label_names(metadata),
        has_train_config=has_train,
    )


def _root(zf: zipfile.ZipFile, max_uncompressed: int) -> str:
    infos = zf.infolist()
    if len(infos) > MAX_MEMBERS:
        raise BundleRejected(
            "too_large", f"the zip holds {len(infos)} files; a bundle may hold {MAX_MEMBERS}"
        )
    if sum(i.file_size for i in infos) > max_uncompressed:
        raise BundleRejected("too_large", f"the bundle unpacks to more than {max_uncompressed} bytes")
    for info in infos:
        name = info.filename
        if name.startswith("/") or ".." in posixpath.normpath(name).split("/") or "\\" in name:
            raise BundleRejected("unsafe_archive", "the zip holds a path outside the bundle")
    roots = sorted(
        (n[: -len("configs/metadata.json")] for n in zf.namelist() if n.endswith("configs/metadata.json")),
        key=len,
    )
    if not roots or roots[0].count("/") > 1:
        raise BundleRejected(
            "not_a_bundle", "no configs/metadata.json at the top of the zip or one folder down"
        )
    return roots[0]


def _read(zf: zipfile.ZipFile, name: str) -> bytes:
    try:
        info = zf.getinfo(name)
    except KeyError:
        raise BundleRejected("not_a_bundle", f"the bundle has no {name.split('/', 1)[-1]}") from None
    if info.file_size > MAX_CONFIG_BYTES:
        raise BundleRejected("too_large", f"{name} is larger than {MAX_CONFIG_BYTES} bytes")
    return zf.read(info)


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise BundleRejected("bad_config", f"{what} is not valid JSON") from None
    if not isinstance(value, dict):
        raise BundleRejected("bad_config", f"{what} must hold a JSON object")
    return value


def _inference_config(zf: zipfile.ZipFile, root: str) -> dict[str, Any]:
    names = set(zf.namelist())
    if root + "configs/inference.json" in names:
        return _json_object(_read(zf, root + "configs/inference.json"), "configs/inference.json")
    for ext in ("yaml", "yml"):
        if (name := root + f"configs/inference.{ext}") in names:
            import yaml  # a safe loader: YAML tags that build Python objects are refused

            try:
                value = yaml.safe_load(_read(zf, name))
            except yaml.YAMLError:
                raise BundleRejected("bad_config", f"configs/inference.{ext} is not valid YAML") from None
            if not isinstance(value, dict):
                raise BundleRejected("bad_config", f"configs/inference.{ext} must hold a mapping")
            return value
    raise BundleRejected("not_a_bundle", "the bundle has no configs/inference.json (or .yaml)")


def walk(node: Any):
    """Every (key, value) pair of the config, at any depth (key None for list items)."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield k, v
            yield from walk(v)
    elif isinstance(node, list):
        for v in node:
            yield None, v
            yield from walk(v)


def _outside(module: str, allowed: tuple[str, ...] = ALLOWED_ROOTS) -> bool:
    return module.split(".")[0] not in allowed


def _check_config(config: dict[str, Any]) -> None:
    for key, value in walk(config):
        if key == "_target_" and isinstance(value, str) and "." in value and _outside(value):
            raise BundleRejected("unsafe_config", f"the config names {value!r}, outside torch and monai")
        if not (isinstance(value, str) and value.startswith("$")):
            continue
        expression = value[1:]
        match = _IMPORT.match(expression)
        if match and _outside(match.group(1) or match.group(2), ALLOWED_IMPORTS):
            module = match.group(1) or match.group(2)
            raise BundleRejected(
                "unsafe_config", f"the config imports {module!r}: a bundle may import torch and monai"
            )
        if _BARE_CALL.search(expression) or _REACH.search(expression):
            raise BundleRejected(
                "unsafe_config", "a config expression reaches for modules or files other than torch and monai"
            )


def _resolve(node: Any, config: dict[str, Any], depth: int = 0) -> Any:
    """network_def with `@id` references replaced by their (literal) values; "$" expressions refused."""
    if depth > 8:
        raise BundleRejected("bad_config", "network_def references nest too deep")
    if isinstance(node, dict):
        return {k: _resolve(v, config, depth + 1) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve(v, config, depth + 1) for v in node]
    if isinstance(node, str) and node.startswith("$"):
        raise BundleRejected("unsafe_config", "network_def must be literal: it holds an expression")
    if isinstance(node, str) and (ref := _REF.match(node)):
        target: Any = config
        for part in ref.group(1).split("#"):
            if not isinstance(target, dict) or part not in target:
                raise BundleRejected("bad_config", f"network_def refers to {node}, which the config lacks")
            target = target[part]
        return _resolve(target, config, depth + 1)
    return node


def _network_def(config: dict[str, Any]) -> dict[str, Any]:
    raw = config.get("network_def")
    if not isinstance(raw, dict) or not isinstance(raw.get("_target_"), str):
        raise BundleRejected("no_network", "the inference config has no network_def with a _target_")
    network = _resolve(raw, config)
    target = network["_target_"]
    network["_target_"] = target if "." in target else NETWORKS + target
    if not network["_target_"].startswith(NETWORKS):
        raise BundleRejected(
            "unsafe_config", f"network_def names {target!r}: only monai.networks.nets networks"
        )
    for key, value in walk({k: v for k, v in network.items() if k != "_target_"}):
        if key == "_target_" and not str(value).startswith(NESTED_TARGETS):
            raise BundleRejected(
                "unsafe_config", f"network_def builds {value!r}: only monai.networks and torch.nn"
            )
    if str(network.get("spatial_dims", network.get("dimensions", 2))) != "2":
        raise BundleRejected(
            "unsupported_network", "only 2D networks (spatial_dims 2) are served yet: cases are slices"
        )
    return network


def _first_spec(metadata: dict[str, Any], key: str) -> dict[str, Any]:
    """network_data_format[key]'s first entry ({} when the metadata is shaped otherwise)."""
    fmt = metadata.get("network_data_format")
    specs = fmt.get(key) if isinstance(fmt, dict) else None
    first = next(iter(specs.values()), None) if isinstance(specs, dict) and specs else None
    return first if isinstance(first, dict) else {}


def _channels(network: dict[str, Any], metadata: dict[str, Any]) -> tuple[int, int]:
    found = (
        network.get("in_channels", _first_spec(metadata, "inputs").get("num_channels")),
        network.get("out_channels", _first_spec(metadata, "outputs").get("num_channels")),
    )
    if not all(isinstance(v, int | str) and str(v).isdigit() and int(v) > 0 for v in found):
        raise BundleRejected(
            "bad_config", "neither network_def nor metadata.json says the network's input and output channels"
        )
    return int(found[0]), int(found[1])  # type: ignore[arg-type]


def _label_names(metadata: dict[str, Any]) -> dict[int, str]:
    channel_def = _first_spec(metadata, "outputs").get("channel_def")
    if not isinstance(channel_def, dict):
        return {}
    return {int(k): str(v)[:64] for k, v in channel_def.items() if str(k).isdigit()}
