import uuid

import pytest
from django.db import connection
from rest_framework.test import APIClient

from annotations.models import Image, ImportJob, Role
from tests.factories import MembershipFactory, ProjectFactory, UserFactory
from tests.helpers import png_upload
from tests.integration.conftest import wait_until
from workers.models import TaskProbe, WorkerHeartbeat
from workers.tasks import ping

pytestmark = pytest.mark.django_db(transaction=True)


def test_runs_on_postgresql():
    assert connection.vendor == "postgresql"


def test_ping_round_trip_through_redis(celery_worker):
    token = uuid.uuid4().hex
    ping.delay(token=token)
    assert wait_until(lambda: TaskProbe.objects.filter(token=token).exists())


def test_upload_is_analysed_by_the_real_worker(celery_worker):
    project = ProjectFactory()
    user = UserFactory()
    MembershipFactory(project=project, user=user, role=Role.DATA_MANAGER)
    client = APIClient()
    client.force_authenticate(user)
    resp = client.post(
        f"/api/v1/projects/{project.pk}/images", {"file": png_upload(seed=3)}, format="multipart"
    )
    assert resp.status_code == 202 and resp.json()["status"] == "queued"  # not eager: the worker parses it
    job = wait_until(lambda: ImportJob.objects.filter(pk=resp.json()["id"], status="succeeded").first())
    assert job.files[0]["peak_rss_bytes"] > 0 and job.files[0]["staged"] == ""
    (image_id,) = job.files[0]["image_ids"]
    image = wait_until(lambda: Image.objects.filter(pk=image_id, status="ready").first())
    assert image.stats["max"] <= 255 and any(p["name"] == "auto" for p in image.window_presets)


def test_healthz_reports_database_broker_and_worker(celery_worker, admin_client):
    client = admin_client
    wait_until(lambda: WorkerHeartbeat.objects.exists(), timeout=15)
    resp = client.get("/healthz")
    body = resp.json()
    assert resp.status_code == 200, body
    assert body["database"] == {"ok": True, "backend": "postgresql"}
    assert body["broker"]["ok"] is True and body["worker"]["ok"] is True
    assert "train" in body["worker"]["queues"]
