from datetime import timedelta

import pytest
from django.utils import timezone

from workers.models import WorkerHeartbeat
from workers.services.heartbeat import worker_heartbeat_record


@pytest.mark.django_db
def test_anonymous_callers_get_the_verdict_only(client):
    resp = client.get("/healthz")
    assert resp.status_code == 503 and resp.json() == {"status": "degraded"}
    worker_heartbeat_record(hostname="w1@test", queues=["default"], pid=1, started_at=timezone.now())
    resp = client.get("/healthz")
    assert resp.status_code == 200 and resp.json() == {"status": "ok"}  # no backends, no queue names


@pytest.mark.django_db
def test_healthz_reports_degraded_without_a_worker(admin_client):
    client = admin_client
    resp = client.get("/healthz")
    body = resp.json()
    assert resp.status_code == 503
    assert body["database"]["ok"] is True and body["worker"]["ok"] is False


@pytest.mark.django_db
def test_healthz_ok_with_a_recent_heartbeat(admin_client, tmp_path, settings):
    client = admin_client
    worker_heartbeat_record(
        hostname="w1@test", queues=["default", "train"], pid=123, started_at=timezone.now()
    )
    body = client.get("/healthz").json()
    assert body["worker"] == {"ok": True, "count": 1, "queues": ["default", "train"]}
    assert body["broker"]["ok"] is True


@pytest.mark.django_db
def test_stale_heartbeat_does_not_count(admin_client):
    client = admin_client
    worker_heartbeat_record(hostname="w1@test", queues=["default"], pid=1, started_at=timezone.now())
    WorkerHeartbeat.objects.update(last_seen=timezone.now() - timedelta(minutes=5))
    assert client.get("/healthz").json()["worker"]["ok"] is False
