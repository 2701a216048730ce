"""Time of one login, end to end, against a real gunicorn process with the production password hashers.

    .venv/bin/python scripts/bench_login.py [--n 20] [--json OUT]

What it does: makes a throw-away SQLite database (hitl.settings.local, DEBUG off: the settings of the
embedded run, so PASSWORD_HASHERS are base.py's, Argon2 first), creates one user with `set_password`, starts
`gunicorn -c deploy/gunicorn.conf.py` (1 worker, 2 threads) on it and times, from this process:

- form: POST / with username, password and the CSRF token (the GET that fetches the token is not timed),
  answered by a 302 and a session cookie;
- token: POST /api/v1/auth/token, answered by 200 {"token", "expiry"}.

Each figure is the request's wall time as the client sees it (connect + server + response), median and p95
(nearest rank) over --n logins. The first form login warms the worker and is not counted. The token route
keeps its per-process burst throttle (20/min), so --n above 20 waits a minute between batches of 20.
It also times the password check alone (Django's hasher, in this process) for Argon2 and for the PBKDF2
hashes users had before. Nothing here asserts a time: it reports.
"""

import argparse
import http.cookiejar
import json
import math
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
USERNAME, PASSWORD = "bench_user", "bench-pass-4f1c9e"  # noqa: S105  (a throw-away database)
THROTTLE_PER_MIN = 20


def nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def summary(ms: list[float]) -> dict:
    return {
        "n": len(ms),
        "median_ms": round(statistics.median(ms), 1),
        "p95_ms": round(nearest_rank(ms, 0.95), 1),
        "min_ms": round(min(ms), 1),
        "max_ms": round(max(ms), 1),
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def request(opener, url: str, data: bytes | None = None, headers: dict | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(  # noqa: S310  (http://127.0.0.1 only)
        url, data=data, headers=headers or {}, method="POST" if data else "GET"
    )
    try:
        with opener.open(req, timeout=60) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def form_login(base: str) -> float:
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), NoRedirect)
    request(opener, f"{base}/")
    csrf = next(c.value for c in jar if c.name == "csrftoken")
    body = urllib.parse.urlencode({"username": USERNAME, "password": PASSWORD, "csrfmiddlewaretoken": csrf})
    t0 = time.perf_counter()
    status, _ = request(
        opener, f"{base}/", body.encode(), {"Content-Type": "application/x-www-form-urlencoded"}
    )
    seconds = time.perf_counter() - t0
    if status != 302 or not any(c.name == "sessionid" for c in jar):
        raise SystemExit(f"form login failed: HTTP {status}")
    return seconds


def token_login(base: str) -> float:
    body = json.dumps({"username": USERNAME, "password": PASSWORD}).encode()
    t0 = time.perf_counter()
    status, raw = request(
        urllib.request.build_opener(),
        f"{base}/api/v1/auth/token",
        body,
        {"Content-Type": "application/json"},
    )
    seconds = time.perf_counter() - t0
    if status != 200 or "token" not in json.loads(raw):
        raise SystemExit(f"token login failed: HTTP {status} {raw[:200]!r}")
    return seconds


def hasher_alone(n: int) -> dict:
    """The password check by itself, in this process: Argon2 (now) and PBKDF2 (before), Django's defaults."""
    from django.contrib.auth.hashers import get_hasher

    out = {}
    for algorithm in ("argon2", "pbkdf2_sha256"):
        hasher = get_hasher(algorithm)
        encoded = hasher.encode(PASSWORD, hasher.salt())
        ms = []
        for _ in range(n):
            t0 = time.perf_counter()
            assert hasher.verify(PASSWORD, encoded)
            ms.append((time.perf_counter() - t0) * 1000)
        out[algorithm] = summary(ms)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20, help="timed logins per route (default 20)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    var = Path(tempfile.mkdtemp(prefix="hitl-bench-login-"))
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "hitl.settings.local",
        "DEBUG": "false",
        "HITL_VAR_DIR": str(var),
        "MEDIA_ROOT": str(var / "media"),
        "CELERY_BROKER_URL": "filesystem://",
    }
    env.pop("DATABASE_URL", None)
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True)
    make_user = (
        f"from django.contrib.auth import get_user_model as g; u = g()(username={USERNAME!r}); "
        f"u.set_password({PASSWORD!r}); u.save(); print(u.password.split('$')[0])"
    )
    hash_kind = (
        subprocess.run(
            [*manage, "shell", "-c", make_user], cwd=ROOT, env=env, check=True, capture_output=True, text=True
        )
        .stdout.strip()
        .splitlines()[-1]
    )

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [
            *[sys.executable, "-m", "gunicorn", "-c", "deploy/gunicorn.conf.py", "hitl.wsgi:application"],
            *["--bind", f"127.0.0.1:{port}", "--workers", "1", "--threads", "2"],
            *["--access-logfile", "/dev/null"],
        ],
        cwd=ROOT,
        env={**env, "LOG_LEVEL": "CRITICAL"},  # /healthz logs a 503 error without a Celery worker
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(240):
            if server.poll() is not None:
                raise SystemExit(f"gunicorn exited with code {server.returncode}")
            try:
                urllib.request.urlopen(f"{base}/healthz", timeout=1)  # noqa: S310  (our local server)
                break
            except urllib.error.HTTPError:
                break  # 503 without a Celery worker: up
            except OSError:
                time.sleep(0.25)
        form_login(base)  # warm-up, not counted
        form_ms = [form_login(base) * 1000 for _ in range(args.n)]
        token_ms = []
        for i in range(args.n):
            if i and i % THROTTLE_PER_MIN == 0:
                time.sleep(61)
            token_ms.append(token_login(base) * 1000)
    finally:
        server.terminate()
        server.wait(timeout=30)

    os.environ.update({k: env[k] for k in ("DJANGO_SETTINGS_MODULE", "DEBUG", "HITL_VAR_DIR", "MEDIA_ROOT")})
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    report = {
        "server": "gunicorn 1 worker x 2 threads, hitl.settings.local (DEBUG off), SQLite",
        "stored_hash": hash_kind,
        "cpus": os.cpu_count(),
        "load_avg_1min_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "python": platform.python_version(),
        "form_login": summary(form_ms),
        "token_login": summary(token_ms),
        "hasher_alone": hasher_alone(args.n),
    }
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    shutil.rmtree(var, ignore_errors=True)


if __name__ == "__main__":
    main()
