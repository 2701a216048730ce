"""Integration tests: the real PostgreSQL and Redis of the machine and a real Celery worker process.

With CI=true they must run: unreachable servers fail the session instead of skipping it."""

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlparse

import pytest

ROOT = Path(__file__).resolve().parents[2]
IN_CI = os.environ.get("CI", "").lower() == "true"


def _reachable(url: str, default_port: int) -> bool:
    parsed = urlparse(url)
    try:
        socket.create_connection(
            (parsed.hostname or "127.0.0.1", parsed.port or default_port), timeout=2
        ).close()
        return True
    except OSError:
        return False


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"integration services unavailable in CI: {reason}", pytrace=False)
    pytest.skip(f"integration tests skipped: {reason} (they run for real in CI)")


def pytest_collection_modifyitems(items):
    for item in items:
        if "integration" in item.path.parts:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session", autouse=True)
def services():
    from django.conf import settings

    if "postgresql" not in settings.DATABASES["default"]["ENGINE"]:
        _unavailable("DATABASE_URL does not point at PostgreSQL (run them with `python3 dev.py test`)")
    if not settings.CELERY_BROKER_URL.startswith("redis://"):
        _unavailable("CELERY_BROKER_URL does not point at Redis")
    if not _reachable(os.environ["DATABASE_URL"], 5432):
        _unavailable("PostgreSQL is not reachable")
    if not _reachable(settings.CELERY_BROKER_URL, 6379):
        _unavailable("Redis is not reachable")


@pytest.fixture(scope="session")
def celery_worker(services, django_db_setup, django_db_blocker):
    """A real `celery worker` process on the test database, the test media folder and Redis."""
    from django.conf import settings

    from hitl.celery import app

    db = settings.DATABASES["default"]
    db_url = f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    env = dict(
        os.environ,
        DATABASE_URL=db_url,
        MEDIA_ROOT=str(settings.MEDIA_ROOT),
        DJANGO_SETTINGS_MODULE="hitl.settings.test",
        CELERY_TASK_ALWAYS_EAGER="false",
        HITL_WORKER_HEARTBEAT_SECONDS="1",
    )
    app.control.purge()
    hostname = f"itest-{uuid.uuid4().hex[:8]}@%h"
    queues = "default,score,explain,train,export"
    cmd = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "hitl",
        "worker",
        "-Q",
        queues,
        "-c",
        "1",
        "-n",
        hostname,
        "-l",
        "WARNING",
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True)
    try:
        _wait_for_heartbeat(django_db_blocker, proc)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def _wait_for_heartbeat(django_db_blocker, proc, timeout: float = 90) -> None:
    from workers.models import WorkerHeartbeat

    deadline = time.time() + timeout
    with django_db_blocker.unblock():
        while time.time() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"the Celery worker exited with code {proc.returncode}", pytrace=False)
            if WorkerHeartbeat.objects.exists():
                return
            time.sleep(0.5)
    pytest.fail("the Celery worker did not report a heartbeat in time", pytrace=False)


def wait_until(predicate, timeout: float = 60, interval: float = 0.25):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")
