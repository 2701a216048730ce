import io
import time
from pathlib import Path

import numpy as np
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image as PILImage


def png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    PILImage.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def png_upload(seed: int = 0, shape=(32, 32), name: str = "img.png") -> SimpleUploadedFile:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, size=shape, dtype=np.uint8)
    return SimpleUploadedFile(name, png_bytes(arr), content_type="image/png")


def upload_images(client, project, files: dict, *, expect: str = "succeeded") -> dict:
    """POST `files` to the upload API, run its import job the way the ingest worker would (after commit)
    and return the job (GET /api/v1/imports/{id}), whose status must be `expect`. For tests in a
    transaction (not transactional_db): a real worker could not see the job's row."""
    from django.test import TestCase

    from workers.services.imports import import_job_execute

    with TestCase.captureOnCommitCallbacks(execute=True):
        resp = client.post(f"/api/v1/projects/{project.pk}/images", files, format="multipart")
    assert resp.status_code == 202, resp.content
    # Eager Celery ran the job on commit; where tasks go to a broker (the PostgreSQL runs of unit tests), no
    # worker can see this test's uncommitted rows, so the job runs here, as the worker would (idempotent).
    import_job_execute(job_id=resp.json()["id"])
    job = client.get(f"/api/v1/imports/{resp.json()['id']}").json()
    assert job["status"] == expect, job
    return job


def process_alive(pid: int) -> bool:
    """False once the process is gone or a zombie (killed, waiting for its parent to reap it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def wait_for(predicate, timeout: float = 30.0) -> bool:
    """Poll `predicate` every 50 ms until it is true or `timeout` seconds pass; its last value."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def volume_image(project, user, pixels: np.ndarray, affine=None, *, window_presets=(), modality: str = "CT"):
    """A stored (S, H, W) volume with an index -> RAS `affine` (None: no geometry) and one pool case per
    slice, as an import leaves it (without running the import)."""
    import hashlib
    import uuid

    from annotations.models import Case, CaseSplit, Image, ImageStatus
    from hitl.core.storage import array_to_bytes, bytes_save

    data = array_to_bytes(pixels)
    digest = hashlib.sha256(data + uuid.uuid4().bytes).hexdigest()
    image = Image.objects.create(
        project=project,
        display_name="volume",
        source_kind="nifti",
        modality=modality,
        pixels_path=bytes_save(f"projects/{project.pk}/images/{digest[:16]}/pixels.npy", data),
        shape=list(pixels.shape),
        dtype=str(pixels.dtype),
        spacing=[0.8, 0.6, 2.5],
        affine=np.asarray(affine).tolist() if affine is not None else None,
        window_presets=list(window_presets),
        content_hash=digest,
        status=ImageStatus.READY,
        created_by=user,
    )
    Case.objects.bulk_create(
        Case(project=project, image=image, slice_index=k, split=CaseSplit.POOL)
        for k in range(pixels.shape[0])
    )
    return image
