"""Planted PHI, end to end: a DICOM file carrying every attribute of Table E.1-1 (and ~400 other free-text
attributes, top level and nested in sequences) with recognisable values, uploaded under a file name made
of PHI, read twice, exported in every format with the images. Afterwards no planted text token, UID or
date, nor the file name, appears in any byte of storage (every file under MEDIA_ROOT, .gz members
inflated), of the database (every row of every table) or of the export zip (every member, inflated)."""

import gzip
import io
import zipfile
from pathlib import Path

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection

from annotations.models import Image, Project, Role
from hitl.core.storage import bytes_load
from tests.helpers import upload_images
from tests.ml.test_deid_planted import planted_dataset
from tests.workers.test_export_helpers import blob_mask, export_everything, revise

pytestmark = pytest.mark.django_db
FILE_NAME = "DOE_JOHN_MRN123456_19650412.dcm"


def _inflated(name: str, data: bytes) -> list[bytes]:
    out = [data]
    if name.endswith(".gz"):
        out.append(gzip.decompress(data))
    if name.endswith(".zip"):
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            for member in zf.namelist():
                out.extend(_inflated(member, zf.read(member)))
    return out


def _storage_blobs() -> list[bytes]:
    blobs = []
    for path in Path(settings.MEDIA_ROOT).rglob("*"):
        if path.is_file():
            blobs.extend(_inflated(path.name, path.read_bytes()))
    return blobs


def _database_blob() -> bytes:
    """Every row of every table, as text (JSON, text and binary columns alike)."""
    parts = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            cursor.execute(f'SELECT * FROM "{table}"')  # noqa: S608 (table names from the schema itself)
            parts.extend(repr(row) for row in cursor.fetchall())
    return "\n".join(parts).encode()


def test_no_planted_value_survives_anywhere(project, member, client_for):
    # Planted dates are 3 days apart; a shift that is not a multiple of 3 never turns one planted date into
    # another (a project's random shift might, and the search would then find a date that is not PHI).
    Project.objects.filter(pk=project.pk).update(date_shift_days=-100)
    project.refresh_from_db()
    dm = member(Role.DATA_MANAGER)
    readers = [member(Role.ANNOTATOR), member(Role.ANNOTATOR)]
    ds, plants = planted_dataset()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    upload_images(client_for(dm), project, {"file": SimpleUploadedFile(FILE_NAME, buf.getvalue())})
    image = Image.objects.get(project=project)
    for case in image.cases.all():
        for seed, reader in enumerate(readers):
            revise(case, blob_mask(tuple(image.shape[1:3]), case.pk + seed), reader, time_spent_s=3.0)
    job = export_everything(project, dm)
    raw = bytes_load(job.result_path)
    export = _inflated("export.zip", raw)
    assert any(b"DICM" in blob[:200] for blob in export), "the export holds the de-identified DICOM"

    needles = {p.needle for p in plants if p.needle} | {b"DOE_JOHN", b"MRN123456", b"19650412"}
    assert len(needles) > 3000
    places = {"storage": _storage_blobs(), "database": [_database_blob()], "export": export}
    for place, blobs in places.items():
        found = sorted(n.decode() for n in needles if any(n in blob for blob in blobs))
        assert not found, f"planted values in {place}: {found[:10]} ({len(found)} in all)"
