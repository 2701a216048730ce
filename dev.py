#!/usr/bin/env python3
"""The two commands of the README, for a fresh machine with nothing but Python 3.11:

    python3 dev.py run     venv + install + migrate + demo data + web server (127.0.0.1:8000) + a Celery worker
                           per work lane (interactive, batch)
    python3 dev.py test    venv + install (incl. Debian packages and sample data) + lint + the whole test suite

Standard library only: it runs before anything is installed."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from scripts.test_services import DEFAULT_BROKER, DEFAULT_DB, OwnServices, choose, pg_bin

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PY = VENV / "bin" / "python"
# Work lanes (hitl/core/lanes.py; a test keeps the two equal): one worker process per lane, so a reader's work
# never waits behind training, scoring, reports or exports.
LANES = {"interactive": "interactive,default", "batch": "ingest,score,explain,train,export"}
# Unit-test files that also run on PostgreSQL: its constraints, and the queue's PostgreSQL-only claim path.
PG_TOO = (
    "tests/annotations/test_models.py",
    "tests/annotations/test_queue.py",
    "tests/annotations/test_leases.py",
    "tests/annotations/test_units.py",
)


def say(msg: str) -> None:
    print(f"\033[1m==> {msg}\033[0m", flush=True)


def run(cmd: list[str], **kw) -> None:
    subprocess.run(cmd, cwd=ROOT, check=True, **kw)


def find_python311() -> str:
    if sys.version_info[:2] == (3, 11):
        return sys.executable
    found = shutil.which("python3.11")
    if not found:
        sys.exit("Python 3.11 is required (python3.11 not found on PATH)")
    return found


def ensure_venv(extras: str) -> None:
    """Create .venv and install the pinned project; skipped when pyproject.toml is unchanged."""
    if not PY.exists():
        say("creating .venv")
        run([find_python311(), "-m", "venv", str(VENV)])
        run([str(PY), "-m", "pip", "install", "-q", "--upgrade", "pip"])
    stamp = VENV / f".installed-{extras or 'base'}"
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == digest:
        return
    say(f"installing the project and its pinned dependencies ({extras or 'base'})")
    target = f".[{extras}]" if extras else "."
    run([str(PY), "-m", "pip", "install", "-q", "-e", target])
    stamp.write_text(digest)


def manage(*args: str, env: dict | None = None) -> None:
    run([str(PY), "manage.py", *args], env=env)


def base_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("DJANGO_SETTINGS_MODULE", "hitl.settings.local")
    # Tests and management commands run one process: it may use every core. The run command's workers get
    # their share each (cmd_run: lanes x threads <= cores) unless HITL_TORCH_THREADS is set.
    env.setdefault("HITL_TORCH_THREADS", str(os.cpu_count() or 1))
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.update(extra)
    return env


def wait_healthy(url: str, timeout: float, procs: list[subprocess.Popen]) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if any(p.poll() is not None for p in procs):
            return False
        try:
            with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310 (our own localhost URL)
                if r.status == 200:
                    return True
        except OSError:  # not listening yet, or 503 until the worker's first heartbeat
            time.sleep(1)
            continue
        time.sleep(1)
    return False


def stop(procs: list[subprocess.Popen]) -> None:
    """Warm shutdown: SIGTERM to each main process (Celery finishes its current task, gunicorn its
    requests); whatever is left of a process group after 30 s is killed."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    deadline = time.time() + 30
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)


def cmd_run() -> int:
    ensure_venv("")
    env = base_env()
    # The SQLite file and the beat schedule live in var/ (settings create nothing; Celery makes its
    # filesystem broker's folders itself when it loads its configuration, hitl/celery.py).
    (ROOT / "var").mkdir(exist_ok=True)
    Path(env.get("HITL_VAR_DIR", ROOT / "var")).mkdir(parents=True, exist_ok=True)
    say("migrating the database")
    manage("migrate", "--noinput", env=env)
    manage("collectstatic", "--noinput", "-v", "0", env=env)
    say("creating the demo project (real MRI from nilearn) and demo users")
    manage("seed_demo", env=env)
    bind = os.environ.get("HITL_BIND", "127.0.0.1:8000")
    # One worker per lane, concurrency 1 each, torch threads split between them: lanes x threads <= cores.
    threads = max(1, (os.cpu_count() or 2) // len(LANES))
    workers = [
        subprocess.Popen(
            [
                str(VENV / "bin" / "celery"),
                "-A",
                "hitl",
                "worker",
                "-Q",
                queues,
                "-c",
                "1",
                "-n",
                f"{lane}@%h",
                "-l",
                "INFO",
                *(
                    ["-B", "--schedule", str(ROOT / "var" / "celerybeat-schedule")]
                    if lane == "interactive"
                    else []
                ),
            ],
            cwd=ROOT,
            env={**env, "HITL_TORCH_THREADS": os.environ.get("HITL_TORCH_THREADS", str(threads))},
            start_new_session=True,
        )
        for lane, queues in LANES.items()
    ]
    web = subprocess.Popen(
        [
            str(VENV / "bin" / "gunicorn"),
            "-c",
            "deploy/gunicorn.conf.py",
            "--bind",
            bind,
            "hitl.wsgi:application",
        ],
        cwd=ROOT,
        env=env,
        start_new_session=True,
    )
    procs = [web, *workers]
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        if wait_healthy(f"http://{bind}/healthz", 120, procs):
            say(f"ready: http://{bind}/  (health: http://{bind}/healthz, API docs: http://{bind}/api/docs/)")
        else:
            say("the web server or the worker did not become healthy; see the log above")
        say("Ctrl-C stops the web server and the worker")
        while all(p.poll() is None for p in procs):
            time.sleep(1)
        return 1
    except KeyboardInterrupt:
        say("stopping")
        return 0
    finally:
        stop(procs)


def ensure_debian(packages: dict[str, str]) -> None:
    """Install missing Debian packages ({package: file it provides}); needs root, as on CI."""
    missing = [pkg for pkg, path in packages.items() if not Path(path).exists()]
    if not missing:
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        print(
            f"warning: cannot install Debian packages {missing} (not root or no apt-get); browser tests will skip"
        )
        return
    say(f"installing Debian packages: {' '.join(missing)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    run(["apt-get", "update", "-qq"], env=env)
    run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], env=env)


def cmd_test(args: list[str]) -> int:
    ensure_venv("dev")
    ensure_debian({"chromium": "/usr/bin/chromium"})  # browser tests (Playwright drives Debian's Chromium)
    run([str(PY), "scripts/fetch_sample_data.py"])
    env = base_env(DJANGO_SETTINGS_MODULE="hitl.settings.test")
    env.pop("DATABASE_URL", None)
    env.pop("CELERY_BROKER_URL", None)
    say("lint: ruff, import contracts, mypy, Django checks, migrations up to date")
    run([str(VENV / "bin" / "ruff"), "check", "."])
    run([str(VENV / "bin" / "lint-imports")])
    run([str(VENV / "bin" / "mypy"), "annotations", "workers", "hitl"], env=env)  # django-stubs: [tool.mypy]
    manage("check", env=env)
    manage("makemigrations", "--check", "--dry-run", env=env)
    say("unit tests (SQLite)")
    unit = subprocess.run(
        [str(PY), "-m", "pytest", "tests", "--ignore=tests/integration", "--ignore=tests/e2e", "-q", *args],
        cwd=ROOT,
        env=env,
    )
    say("integration tests (PostgreSQL + Redis + a real Celery worker)")
    with test_services() as urls:
        integ = subprocess.run(
            [str(PY), "-m", "pytest", "tests/integration", *PG_TOO, "-q", *args],
            cwd=ROOT,
            env=integration_env(env, urls),
        )
    say("browser tests (Playwright + Chromium)")
    e2e = subprocess.run([str(PY), "-m", "pytest", "tests/e2e", "-q", *args], cwd=ROOT, env=env)
    codes = {"unit": unit.returncode, "integration": integ.returncode, "e2e": _no_tests_ok(e2e.returncode)}
    say(f"exit codes: {codes}")
    return 0 if all(c == 0 for c in codes.values()) else 1


def _no_tests_ok(code: int) -> int:
    """pytest exits 5 when a folder holds no tests yet; that is not a failure of the suite."""
    return 0 if code == 5 else code


@contextlib.contextmanager
def test_services():
    """The PostgreSQL and Redis URLs the integration tests use: the machine's when both answer (or
    HITL_TEST_SERVICES=system), else (or with HITL_TEST_SERVICES=own) our own, started from Debian's packages
    on private ports and data directories and stopped at the end (scripts/test_services.py)."""
    urls = {
        "HITL_TEST_DATABASE_URL": os.environ.get("HITL_TEST_DATABASE_URL", DEFAULT_DB),
        "HITL_TEST_BROKER_URL": os.environ.get("HITL_TEST_BROKER_URL", DEFAULT_BROKER),
    }
    mode = os.environ.get("HITL_TEST_SERVICES", "auto")
    if not choose(mode, urls["HITL_TEST_DATABASE_URL"], urls["HITL_TEST_BROKER_URL"]):
        say(
            f"using this machine's PostgreSQL and Redis ({urls['HITL_TEST_DATABASE_URL']}, {urls['HITL_TEST_BROKER_URL']})"
        )
        yield urls
        return
    missing = [] if pg_bin() else ["postgresql"]
    missing += [] if shutil.which("redis-server") else ["redis-server"]
    ensure_debian({pkg: "/nonexistent" for pkg in missing})
    services = OwnServices()
    own = services.start()
    say(
        f"started our own PostgreSQL and Redis for the tests ({own['HITL_TEST_DATABASE_URL']}, {own['HITL_TEST_BROKER_URL']})"
    )
    try:
        yield own
    finally:
        services.stop()
        say("stopped our own PostgreSQL and Redis")


def integration_env(env: dict[str, str], urls: dict[str, str]) -> dict[str, str]:
    return dict(
        env,
        DATABASE_URL=urls["HITL_TEST_DATABASE_URL"],
        CELERY_BROKER_URL=urls["HITL_TEST_BROKER_URL"],
        CELERY_TASK_ALWAYS_EAGER="false",
        HITL_WORKER_HEARTBEAT_SECONDS="1",
    )


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in ("run", "test"):
        print(__doc__)
        return 2
    os.chdir(ROOT)
    return cmd_run() if sys.argv[1] == "run" else cmd_test(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
