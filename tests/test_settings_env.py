"""Settings and deployment docs stay in step; production is locked down."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENV_READ = re.compile(r"""env(?:\.(?:bool|int|list|db|str|float))?\(\s*["']([A-Z][A-Z0-9_]+)["']""")
ENVIRON_READ = re.compile(r"""os\.environ(?:\.get)?[\(\[]\s*["']([A-Z][A-Z0-9_]+)["']""")


def _documented() -> set[str]:
    text = (ROOT / "deploy" / ".env.example").read_text()
    return set(re.findall(r"^([A-Z][A-Z0-9_]+)=", text, flags=re.M))


def test_every_setting_read_from_the_environment_is_documented():
    read: set[str] = set()
    for path in [
        *(ROOT / "hitl" / "settings").glob("*.py"),
        ROOT / "deploy" / "gunicorn.conf.py",
        ROOT / "workers" / "ml" / "models" / "device.py",
    ]:
        text = path.read_text()
        read |= set(ENV_READ.findall(text)) | set(ENVIRON_READ.findall(text))
    assert read, "the regex found no environment reads: it is broken"
    missing = read - _documented()
    assert not missing, f"settings read but not documented in deploy/.env.example: {sorted(missing)}"


def _run_production(args: list[str], **env: str) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "DATABASE_URL")}
    full.update(DJANGO_SETTINGS_MODULE="hitl.settings.production", **env)
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=full, capture_output=True, text=True, timeout=120
    )


def test_production_refuses_to_start_without_secret_key():
    result = _run_production(["check"])
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


def test_production_check_deploy_has_no_warnings():
    key = "k3y-" + "x7Yq9#Lm2$Vb8!Rt5%Wn1&Zc6*Hp4(Jd0)Gf3-Ks9_Qa7+Ue2=" * 2
    result = _run_production(
        ["check", "--deploy", "--fail-level", "WARNING"], SECRET_KEY=key, ALLOWED_HOSTS="hitl.example.org"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def _fresh_env(tmp: Path, settings_module: str) -> dict[str, str]:
    """The embedded default's environment with every folder the settings name pointing into `tmp`."""
    full = {k: v for k, v in os.environ.items() if k not in ("CELERY_BROKER_URL", "DATABASE_URL")}
    full.update(
        DJANGO_SETTINGS_MODULE=settings_module,
        SECRET_KEY="k3y-" + "x7Yq9#Lm2$Vb8!Rt5%Wn1&Zc6*Hp4(Jd0)Gf3-Ks9_Qa7+Ue2=" * 2,
        HITL_VAR_DIR=str(tmp / "var"),
        MEDIA_ROOT=str(tmp / "media"),
        STATIC_ROOT=str(tmp / "static"),
        CELERY_BROKER_DIR=str(tmp / "broker"),
    )
    return full


def _python(code: str, env: dict[str, str]) -> None:
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]


def test_importing_the_settings_creates_no_files(tmp_path):
    for module in ("hitl.settings.base", "hitl.settings.local", "hitl.settings.production"):
        _python(f"import importlib; importlib.import_module({module!r})", _fresh_env(tmp_path, module))
        assert list(tmp_path.rglob("*")) == [], module


def test_the_first_publish_makes_the_filesystem_brokers_folders(tmp_path):
    """The web process publishes (through the outbox) before any worker ran: kombu's filesystem transport
    needs its folders then, and Celery makes them when it loads its configuration."""
    code = "from hitl.celery import app; app.send_task('workers.tasks.system.ping', kwargs={'token': 't'})"
    _python(code, _fresh_env(tmp_path, "hitl.settings.local"))
    assert {p.name for p in (tmp_path / "broker").iterdir()} == {"queue", "processed", "control"}
    assert [p.suffix for p in (tmp_path / "broker" / "queue").iterdir()] == [".msg"]


def test_on_redis_a_dead_workers_unacknowledged_tasks_come_back_after_the_visibility_timeout(tmp_path):
    env = _fresh_env(tmp_path, "hitl.settings.local")
    code = (
        "from hitl.celery import app; o = app.conf.broker_transport_options; "
        "assert o == {'visibility_timeout': %s, 'unacked_restore_interval': %s, 'unacked_restore_throttle': 1,"
        " 'unacked_mutex_expire': %s}, o"
    )
    # kombu scans for them every 10 s (at most), not every 10 x 10 s; its scan mutex outlives no timeout
    _python(code % (900, 10, 300), {**env, "CELERY_BROKER_URL": "redis://127.0.0.1:1/0"})
    _python(
        code % (60, 10, 60),
        {**env, "CELERY_BROKER_URL": "redis://127.0.0.1:1/0", "HITL_BROKER_VISIBILITY_SECONDS": "60"},
    )
    _python(
        code % (5, 5, 5),
        {**env, "CELERY_BROKER_URL": "redis://127.0.0.1:1/0", "HITL_BROKER_VISIBILITY_SECONDS": "5"},
    )
