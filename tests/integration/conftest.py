"""Integration tests: the real PostgreSQL and Redis of the machine and a real Celery worker process.

With CI=true they must run: unreachable servers fail the session instead of skipping it."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import pytest

from hitl.core.lanes import ALL_QUEUES

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

    from hitl.celery import app

    env = subprocess_env(HITL_WORKER_HEARTBEAT_SECONDS="1")
    app.control.purge()
    hostname = f"itest-{uuid.uuid4().hex[:8]}@%h"
    queues = ",".join(ALL_QUEUES)  # one worker for every lane
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
        stop(proc)


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment of a worker or web server process on this session's test database and media."""
    from django.conf import settings

    db = settings.DATABASES["default"]
    return dict(
        os.environ,
        DATABASE_URL=f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
        MEDIA_ROOT=str(settings.MEDIA_ROOT),
        DJANGO_SETTINGS_MODULE="hitl.settings.test",
        CELERY_TASK_ALWAYS_EAGER="false",
        **extra,
    )


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL after 30 s."""
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


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


@dataclass(frozen=True)
class WebServer:
    url: str  # base URL, no trailing slash: f"{server.url}/api/v1/..."
    pid: int  # of the gunicorn master: a process other than the test's


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def web_server(services, transactional_db):
    """A real web server (gunicorn, 1 worker x 4 threads, hitl.settings.test) as a subprocess on this test's
    PostgreSQL database and media folder; yields WebServer(url, pid) once /healthz answers.

    It sees only committed rows, hence `transactional_db`; it is stopped before that fixture empties the
    tables. Environment variables the test sets before requesting it reach the server too."""
    proc, url = start_gunicorn(workers=1, threads=4)
    try:
        yield WebServer(url=url, pid=proc.pid)
    finally:
        stop(proc)


def start_gunicorn(*, workers: int, threads: int) -> tuple[subprocess.Popen, str]:
    """gunicorn on a free port with `subprocess_env()`, once /healthz answers: (process, base URL)."""
    port = _free_port()
    cmd = [sys.executable, "-m", "gunicorn", "-c", "deploy/gunicorn.conf.py", "--bind", f"127.0.0.1:{port}"]
    cmd += ["--workers", str(workers), "--threads", str(threads), "--access-logfile", "/dev/null"]
    proc = subprocess.Popen(
        [*cmd, "hitl.wsgi:application"], cwd=ROOT, env=subprocess_env(), start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for_http(f"{url}/healthz", proc)
    except BaseException:
        stop(proc)
        raise
    return proc, url


def _wait_for_http(url: str, proc, timeout: float = 90) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the web server exited with code {proc.returncode}", pytrace=False)
        try:
            urllib.request.urlopen(url, timeout=2)  # noqa: S310  (our own local server)
            return
        except urllib.error.HTTPError:
            return  # 503 without a Celery worker: the server answers, that is enough
        except OSError:
            time.sleep(0.25)
    pytest.fail(f"the web server did not answer {url} in time", pytrace=False)


def wait_until(predicate, timeout: float = 60, interval: float = 0.25, describe=None):
    """predicate()'s first truthy value within `timeout` s; else AssertionError, with describe()'s account of
    the state when given (what a failure on a slow machine needs to be understood)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    state = f": {describe()}" if describe is not None else ""
    raise AssertionError(f"condition not met in {timeout} s{state}")


@pytest.fixture
def session_worker_paused():
    """The session's worker(s) stop consuming every queue for the test, and consume them again after."""
    from hitl.celery import app

    replies = app.control.inspect(timeout=2.0).active_queues() or {}
    paused = [(host, q["name"]) for host, queues in replies.items() for q in queues]
    for host, queue in paused:
        app.control.cancel_consumer(queue, destination=[host], reply=True, timeout=5.0)
    yield
    for host, queue in paused:
        app.control.add_consumer(queue, destination=[host], reply=True, timeout=5.0)


class OwnWorker:
    """A worker of a test's own on `queues` (with beat: the outbox sweep, the reapers), started again after
    each kill; `env` adds settings."""

    def __init__(
        self, tmp: Path, queues: tuple[str, ...] = ALL_QUEUES, beat: bool = True, **env: str
    ) -> None:
        self.tmp, self.queues, self.beat, self.env = tmp, queues, beat, env
        self.proc: subprocess.Popen | None = None
        self.hostname = ""

    def start(self) -> None:
        from workers.models import WorkerHeartbeat

        env = subprocess_env(HITL_WORKER_HEARTBEAT_SECONDS="1", HITL_TORCH_THREADS="1", **self.env)
        self.hostname = f"own-{uuid.uuid4().hex[:6]}@itest"
        cmd = [sys.executable, "-m", "celery", "-A", "hitl", "worker", "-Q", ",".join(self.queues), "-c", "1"]
        cmd += ["-n", self.hostname, "-l", "WARNING"]
        if self.beat:
            cmd += ["-B", "--schedule", str(self.tmp / f"beat-{self.hostname}")]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True)
        wait_until(
            lambda: (
                self.proc.poll() is not None
                or WorkerHeartbeat.objects.filter(hostname=self.hostname).exists()
            ),
            90,
        )
        assert self.proc.poll() is None, "the worker exited"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def freeze(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGSTOP)

    def freeze_and_kill(self) -> None:
        """SIGSTOP at once (the work stays half done), then SIGKILL the whole process group."""
        assert self.proc is not None
        self.freeze()
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def end(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
