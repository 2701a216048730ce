"""The hostile-upload corpus (tests/hostile.py) through the upload API: every file gets a 4xx with a clear
message, from its headers at once or from its import job, nothing is stored (no image, no case, no
media file, no staged upload), and the parsing child never exceeds its memory limit.

The web process's own memory is measured in tests/integration/test_hostile_uploads_rss.py, against a
separate server process (this process has long since peaked on other tests)."""

from pathlib import Path

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import TestCase

from annotations.models import Case, Image, ImportJob
from hitl.core.models import AuditEvent
from tests.hostile import corpus

NAMES = list(corpus())


def _upload(client, project, name: str):
    """POST one corpus file and run its import job as the ingest worker would (after commit)."""
    data, filename, _ = corpus()[name]
    with TestCase.captureOnCommitCallbacks(execute=True):
        return client.post(
            f"/api/v1/projects/{project.pk}/images",
            {"file": SimpleUploadedFile(filename, data)},
            format="multipart",
        )


def _media_files() -> list[Path]:
    root = Path(settings.MEDIA_ROOT)
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


@pytest.mark.django_db
@pytest.mark.parametrize("name", NAMES)
def test_hostile_upload_is_refused_with_a_clear_4xx_and_nothing_stored(dm_client, project, name, settings):
    settings.HITL_INGEST_MEMORY_BYTES = 1 << 30  # a tight child: exhaustion must end in a clean refusal
    data, filename, codes = corpus()[name]
    resp = _upload(dm_client, project, name)
    if resp.status_code == 202:  # the headers passed: the sandboxed parse refused it
        job = dm_client.get(f"/api/v1/imports/{resp.json()['id']}").json()
        assert job["status"] == "failed", job
        (entry,) = job["files"]
        error, http = entry["error"], entry["error"]["status"]
        if entry["peak_rss_bytes"] is not None:
            assert entry["peak_rss_bytes"] <= settings.HITL_INGEST_MEMORY_BYTES
    else:
        error, http = resp.json()["error"], resp.status_code
        assert not ImportJob.objects.exists()
    assert 400 <= http < 500 and error["code"] in codes, (http, error)
    assert error["message"] and filename not in error["message"]
    assert not Image.objects.exists() and not Case.objects.exists()
    assert _media_files() == []  # staged uploads deleted too
    assert not AuditEvent.objects.filter(action="image.import").exists()


@pytest.mark.django_db
def test_the_corpus_covers_both_stages(dm_client, project):
    """Guard against a corpus that only ever exercises one of the two defences."""
    refused_at_once = {
        "1-bit PNG 13000 x 13000",
        "nifti header claiming 2^31 voxels",
        "zip with 100000 entries",
    }
    parsed_then_refused = {"deflated DICOM bomb", "nii.gz bomb behind a valid header", "zip whose sizes lie"}
    for name in refused_at_once | parsed_then_refused:
        resp = _upload(dm_client, project, name)
        assert (resp.status_code == 202) == (name in parsed_then_refused), (name, resp.status_code)
