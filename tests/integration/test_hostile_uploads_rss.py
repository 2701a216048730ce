"""The hostile-upload corpus against a real web server process and the real ingest worker: the web
process's peak resident memory (VmHWM) grows by at most 64 MB over the whole corpus, and every parsing
child stays under the configured memory limit. Figures are printed (docs/results/README.md records them).
"""

import json
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from django.conf import settings

from annotations.models import ImportJob, Role
from tests.factories import MembershipFactory, ProjectFactory, UserFactory
from tests.helpers import png_bytes
from tests.hostile import corpus
from tests.integration.conftest import wait_until

pytestmark = pytest.mark.django_db(transaction=True)
MB = 1 << 20
WEB_GROWTH_LIMIT = 64 * MB


def _vm_hwm(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def _gunicorn_worker(master: int) -> int:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


def _request(url: str, *, token: str | None = None, body: bytes | None = None, ctype: str = "") -> tuple:
    req = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")
    if token:
        req.add_header("Authorization", f"Token {token}")
    if ctype:
        req.add_header("Content-Type", ctype)
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:  # noqa: S310 (our own test server)
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


def _multipart(filename: str, data: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def test_web_memory_stays_flat_and_children_stay_within_their_limit(celery_worker, web_server):
    project = ProjectFactory()
    dm = UserFactory(username="hostile_dm")
    MembershipFactory(project=project, user=dm, role=Role.DATA_MANAGER)
    status, body = _request(
        f"{web_server.url}/api/v1/auth/token",
        body=json.dumps({"username": "hostile_dm", "password": "pw"}).encode(),
        ctype="application/json",
    )
    assert status == 200, body
    token, upload_url = body["token"], f"{web_server.url}/api/v1/projects/{project.pk}/images"

    # warm-up: one good upload and its job, so code paths are loaded before the baseline is read
    status, job = _request(
        upload_url, token=token, body=(mp := _multipart("ok.png", png_bytes(_img())))[0], ctype=mp[1]
    )
    assert status == 202, job
    wait_until(lambda: ImportJob.objects.filter(pk=job["id"], status="succeeded").exists(), timeout=120)
    worker = _gunicorn_worker(web_server.pid)
    baseline = _vm_hwm(worker)

    jobs: dict[str, int] = {}
    for name, (data, filename, codes) in corpus().items():
        payload, ctype = _multipart(filename, data)
        status, body = _request(upload_url, token=token, body=payload, ctype=ctype)
        if status == 202:
            jobs[name] = body["id"]
        else:
            assert 400 <= status < 500 and body["error"]["code"] in codes, (name, status, body)
    finished = lambda: ImportJob.objects.filter(pk__in=jobs.values(), finished_at__isnull=False).count()  # noqa: E731
    wait_until(lambda: finished() == len(jobs), timeout=600)
    growth = _vm_hwm(worker) - baseline

    limit = settings.HITL_INGEST_MEMORY_BYTES
    print(f"\nweb worker VmHWM before {baseline / MB:.1f} MB, growth over the corpus {growth / MB:.1f} MB")
    for name, job_id in jobs.items():
        (entry,) = ImportJob.objects.get(pk=job_id).files
        assert entry["status"] == "failed" and entry["error"]["code"] in corpus()[name][2], (name, entry)
        peak = entry.get("peak_rss_bytes")
        print(f"  {name}: {entry['error']['code']}, child peak RSS {peak and peak / MB:.1f} MB")
        assert peak is None or peak <= limit, (name, peak, limit)
    assert growth <= WEB_GROWTH_LIMIT, f"the web process grew by {growth / MB:.1f} MB"
    assert project.images.count() == 1  # only the warm-up image


def _img():
    import numpy as np

    return np.random.default_rng(1).integers(0, 255, (32, 32), dtype=np.uint8)
