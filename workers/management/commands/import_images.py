"""python manage.py import_images PATH --project P --user U [--masks DIR] [--split pool]

PATH is a file (DICOM, zip, PNG, TIFF, NIfTI) or a folder: every folder holding DICOM files is imported as
one zipped series, every other image file on its own. A mask is matched by file stem in --masks
(`<stem>.*`, `<stem>_mask.*` or `<stem>_seg.*`). Each upload goes through the API's checks and the
sandboxed parse (an import job, run here without a worker); local file names are printed, never stored."""

import io
import tempfile
import zipfile
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from annotations.models import CaseSplit, Project
from hitl.core.permissions import Action, allows, user_roles
from hitl.core.types import User
from workers.services.imports import UploadRefused, import_file_now

IMAGE_SUFFIXES = {".png", ".tif", ".tiff", ".nii", ".gz", ".zip", ".dcm"}


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".ome.tif", ".ome.tiff"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _zip_folder(folder: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(folder.iterdir()):
            if f.is_file() and not f.is_symlink():
                zf.write(f, arcname=f.name)
    return buf.getvalue()


def _is_dicom(path: Path) -> bool:
    if path.suffix.lower() == ".dcm":
        return True
    with path.open("rb") as fh:
        head = fh.read(132)
    return len(head) == 132 and head[128:] == b"DICM"


def collect_uploads(root: Path) -> list[tuple[str, Path, bytes | None]]:
    """(name, path, pre-built bytes or None) per upload; DICOM folders become one zipped series."""
    if root.is_file():
        return [(root.name, root, None)]
    uploads: list[tuple[str, Path, bytes | None]] = []
    for folder in sorted({p.parent for p in root.rglob("*") if p.is_file()}):
        files = sorted(p for p in folder.iterdir() if p.is_file() and not p.is_symlink())
        dicoms = [p for p in files if _is_dicom(p)]
        if dicoms:
            uploads.append((f"{folder.name}.zip", folder, _zip_folder(folder)))
        uploads += [
            (p.name, p, None) for p in files if p not in dicoms and p.suffix.lower() in IMAGE_SUFFIXES
        ]
    return uploads


def find_mask(masks_dir: Path | None, image_path: Path) -> Path | None:
    if masks_dir is None:
        return None
    stem = _stem(image_path)
    for candidate in sorted(masks_dir.iterdir()):
        if _stem(candidate) in (stem, f"{stem}_mask", f"{stem}_seg"):
            return candidate
    return None


class Command(BaseCommand):
    help = "Import (and de-identify) images into a project, with optional reference masks."

    def add_arguments(self, parser):
        parser.add_argument("path", type=Path)
        parser.add_argument("--project", required=True, help="project id or name")
        parser.add_argument("--user", required=True, help="the data manager doing the import (audit trail)")
        parser.add_argument("--masks", type=Path, default=None, help="folder of reference masks")
        parser.add_argument("--split", default=CaseSplit.POOL, choices=CaseSplit.values)

    def handle(self, *args, path: Path, project: str, user: str, masks: Path | None, split: str, **opts):
        path, masks = Path(path), Path(masks) if masks else None  # call_command passes strings through
        proj = self._project(str(project))
        actor = get_user_model().objects.filter(username=user, is_active=True).first()
        if actor is None or not allows(user_roles(actor, proj), Action.IMPORT_IMAGES):
            raise CommandError("the --user must be an active data manager or admin of the project")
        if not path.exists():
            raise CommandError(f"{path} does not exist")
        uploads = collect_uploads(path)
        counts = {"imported": 0, "duplicate": 0, "failed": 0}
        for name, src, prebuilt in tqdm(
            uploads, desc="importing", unit="file", disable=opts["verbosity"] == 0
        ):
            entry = self._import_one(proj, actor, src, prebuilt, find_mask(masks, src), split)
            counts["imported"] += len(entry.get("image_ids", []))
            counts["duplicate"] += len(entry.get("duplicates", []))
            if entry["status"] == "failed":
                counts["failed"] += 1
                tqdm.write(f"skipped {name}: {entry['error']['code']}: {entry['error']['message']}")
        self.stdout.write(
            f"imported {counts['imported']} image(s), {counts['duplicate']} duplicate(s) reported, "
            f"{counts['failed']} failed"
        )
        if counts["failed"] and not counts["imported"]:
            raise CommandError("nothing could be imported")

    def _import_one(
        self, proj: Project, actor: User, src: Path, prebuilt: bytes | None, mask: Path | None, split: str
    ):
        """One upload, run in this process (no worker needed). Returns the import job's file entry."""
        with tempfile.TemporaryDirectory(prefix="hitl-cli-") as tmp:
            if prebuilt is not None:
                src = Path(tmp) / "series.zip"
                src.write_bytes(prebuilt)
            try:
                return import_file_now(project=proj, user=actor, path=src, mask=mask, split=split)
            except UploadRefused as exc:  # refused by its headers
                return {"status": "failed", "error": {"code": exc.code, "message": str(exc)}}

    def _project(self, ref: str) -> Project:
        qs = Project.objects.filter(pk=int(ref)) if ref.isdigit() else Project.objects.filter(name=ref)
        proj = qs.first()
        if proj is None:
            raise CommandError(f"no project {ref!r}")
        return proj
