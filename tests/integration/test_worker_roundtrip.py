import uuid

import pytest
from django.db import connection
from rest_framework.test import APIClient

from annotations.models import Image, Role
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
    assert resp.status_code == 201
    assert resp.json()["images"][0]["status"] == "processing"  # not eager: the worker does it
    image_id = resp.json()["images"][0]["id"]
    image = wait_until(lambda: Image.objects.filter(pk=image_id, status="ready").first())
    assert image.stats["max"] <= 255 and any(p["name"] == "auto" for p in image.window_presets)


def test_healthz_reports_database_broker_and_worker(celery_worker, client):
    wait_until(lambda: WorkerHeartbeat.objects.exists(), timeout=15)
    resp = client.get("/healthz")
    body = resp.json()
    assert resp.status_code == 200, body
    assert body["database"] == {"ok": True, "backend": "postgresql"}
    assert body["broker"]["ok"] is True and body["worker"]["ok"] is True
    assert "train" in body["worker"]["queues"]
