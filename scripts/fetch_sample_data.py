#!/usr/bin/env python3
"""Install step: put the real sample data into ``var/data/`` (or ``$HITL_DATA_DIR``).

Everything comes from ordinary package registries (no hub, no Zenodo), so it works wherever
``apt-get`` and ``pip`` reach their registries:

- ``mricron/``: Debian's ``mricron-data`` unpacked without root (Colin27 ``ch2.nii.gz``, ``ch2bet.nii.gz``,
  AAL atlas ``aal.nii.gz`` + ``aal.nii.txt``) under ``usr/share/mricron/templates/``.
- ``totalsegmentator/``: ``tests/reference_files/`` of the TotalSegmentator 2.18.0 sdist, plus the package's
  ``totalsegmentator/map_to_binary.py`` (the label id -> organ name map).
- ``stardist/``: ``img2d.tif`` and ``mask2d.tif`` from the stardist 0.9.2 wheel.

Idempotent: a source whose files are already there is skipped. Exits non-zero on any failure.
Standard library only, so it runs before the project's own dependencies are installed.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
MRICRON_FILES = ("ch2.nii.gz", "ch2bet.nii.gz", "aal.nii.gz", "aal.nii.txt")
TOTALSEG_VERSION = "2.18.0"
TOTALSEG_MARKERS = ("example_ct_sm.nii.gz", "example_seg.nii.gz")
STARDIST_VERSION = "0.9.2"
STARDIST_FILES = ("img2d.tif", "mask2d.tif")


class FetchError(RuntimeError):
    """A source could not be fetched; the message says what to do."""


def data_dir() -> Path:
    """Same rule as ``workers.ml.imaging.datasets.data_dir`` (kept in sync by hand: this script is stdlib-only)."""
    env = os.environ.get("HITL_DATA_DIR")
    return Path(env).expanduser().resolve() if env else REPO_ROOT / "var" / "data"


def _run(cmd: list[str], cwd: Path) -> None:
    print("  $", " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise FetchError(
            f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr.strip()[-2000:]}"
        )


def _single(pattern: str) -> Path:
    hits = sorted(glob.glob(pattern))
    if len(hits) != 1:
        raise FetchError(f"expected exactly one file matching {pattern}, found {hits}")
    return Path(hits[0])


def fetch_mricron(root: Path) -> None:
    templates = root / "mricron" / "usr" / "share" / "mricron" / "templates"
    if all((templates / f).is_file() for f in MRICRON_FILES):
        print(f"mricron-data: present in {templates}, skipping")
        return
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        raise FetchError("mricron-data needs apt-get and dpkg (Debian/Ubuntu)")
    print("mricron-data: downloading the Debian package (about 16 MB)")
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        _run(["apt-get", "download", "mricron-data"], cwd=tmpdir)
        deb = _single(str(tmpdir / "mricron-data_*.deb"))
        _run(["dpkg", "-x", str(deb), str(root / "mricron")], cwd=tmpdir)
    missing = [f for f in MRICRON_FILES if not (templates / f).is_file()]
    if missing:
        raise FetchError(f"mricron-data unpacked but {missing} missing under {templates}")
    print(f"mricron-data: ok -> {templates}")


def _extract_members(tar: tarfile.TarFile, prefix: str, dest: Path) -> int:
    """Extract members under `prefix` (relative to the sdist root) into `dest`, path-traversal safe."""
    count = 0
    for member in tar.getmembers():
        parts = member.name.split("/", 1)
        if len(parts) < 2 or not parts[1].startswith(prefix) or not member.isfile():
            continue
        rel = Path(parts[1])
        if rel.is_absolute() or ".." in rel.parts:
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        src = tar.extractfile(member)
        if src is None:
            continue
        with src, open(target, "wb") as out:
            shutil.copyfileobj(src, out)
        count += 1
    return count


def fetch_totalseg(root: Path) -> None:
    dest = root / "totalsegmentator"
    ref = dest / "tests" / "reference_files"
    class_map = dest / "totalsegmentator" / "map_to_binary.py"
    if all((ref / f).is_file() for f in TOTALSEG_MARKERS) and class_map.is_file():
        print(f"totalsegmentator: present in {dest}, skipping")
        return
    print(f"totalsegmentator: downloading the {TOTALSEG_VERSION} sdist (about 38 MB)")
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        _run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
             f"totalsegmentator=={TOTALSEG_VERSION}", "-d", str(tmpdir)],
            cwd=tmpdir,
        )  # fmt: skip
        sdist = _single(str(tmpdir / "[Tt]otal[Ss]egmentator-*.tar.gz"))
        with tarfile.open(sdist, "r:gz") as tar:
            n = _extract_members(tar, "tests/reference_files/", dest)
            n += _extract_members(tar, "totalsegmentator/map_to_binary.py", dest)
    if n == 0 or not all((ref / f).is_file() for f in TOTALSEG_MARKERS):
        raise FetchError(
            f"TotalSegmentator sdist did not contain {TOTALSEG_MARKERS} under tests/reference_files/"
        )
    print(f"totalsegmentator: ok ({n} files) -> {dest}")


def fetch_stardist(root: Path) -> None:
    dest = root / "stardist"
    if all((dest / f).is_file() for f in STARDIST_FILES):
        print(f"stardist: present in {dest}, skipping")
        return
    print(f"stardist: downloading the {STARDIST_VERSION} wheel")
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        _run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                f"stardist=={STARDIST_VERSION}",
                "-d",
                str(tmpdir),
            ],
            cwd=tmpdir,
        )
        wheel = _single(str(tmpdir / "stardist-*.whl"))
        dest.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheel) as zf:
            for name in STARDIST_FILES:
                with zf.open(f"stardist/data/images/{name}") as src, open(dest / name, "wb") as out:
                    shutil.copyfileobj(src, out)
    print(f"stardist: ok -> {dest}")


def main() -> int:
    root = data_dir()
    root.mkdir(parents=True, exist_ok=True)
    print(f"sample data directory: {root}")
    failures: list[str] = []
    for fetch in (fetch_mricron, fetch_totalseg, fetch_stardist):
        try:
            fetch(root)
        except (FetchError, OSError, KeyError, tarfile.TarError, zipfile.BadZipFile) as exc:
            failures.append(f"{fetch.__name__}: {exc}")
            print(f"ERROR in {fetch.__name__}: {exc}", file=sys.stderr)
    if failures:
        print(f"{len(failures)} source(s) failed; rerun after fixing the cause (done sources are skipped).",
              file=sys.stderr)  # fmt: skip
        return 1
    print("all sample data present.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
