"""Issue 16's restart drill: Redis restarted during a stream of submissions, PostgreSQL during claims.

Both restarts happen on a PostgreSQL and Redis of this module's own (scripts/test_services.OwnServices, Redis
with an append-only file as in deploy/compose.yaml), never on the servers the rest of the session uses. On
that pair run, as subprocesses, `manage.py migrate`, a small setup (`manage.py shell -c`), a real web server
(gunicorn with deploy/gunicorn.conf.py, 2 workers x 4 threads) and a real Celery worker on every queue with
beat (-B: the outbox sweep and lease expiry), all with hitl.settings.local, the run command's settings. Readers
talk to the web server over HTTP only (Token auth), the way an API client does.

- Redis down during submissions: no response is a 5xx other than 503 (a 503 carries Retry-After), every
  submission acknowledged with 201 is in the database afterwards, every outbox message written during the
  stream is eventually sent (`sent_at`, hitl.core.outbox) and did its work (an agreement row per case with two
  readings), including those the broker refused while it was down (sent later by the beat's sweep).
- PostgreSQL down (`pg_ctl stop -m immediate`, a crash) during claims: while it is down every request gets 503
  with Retry-After (never 500, never no answer within the client timeout); afterwards the same web workers
  serve claims again, and no reading slot is held twice (leases and the case's slot bookkeeping agree).

It runs in `python3 dev.py test` with the other integration tests; to run it alone, see
docs/results/README.md (Reliability drill). With CI=true it fails instead of skipping when the servers are not installed."""

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from annotations.models import Agreement, Annotation, Assignment, Case
from hitl.core.lanes import ALL_QUEUES
from hitl.core.models import OutboxMessage
from hitl.core.storage import mask_to_png
from scripts.test_services import OwnServices, free_port, pg_bin
from tests.integration.conftest import ROOT, _unavailable, _wait_for_http, stop, wait_until
from workers.models import WorkerHeartbeat

READERS = 3
PASSWORD = "drill-reader-pass"  # noqa: S105  (a throwaway user of a throwaway database)
STREAM_POOL = 24  # Redis drill: 24 cases x 2 readers = 48 submissions
CLAIM_POOL = 8  # PostgreSQL drill: readers claim and release these, one reader per case
CLIENT_TIMEOUT_S = 30.0  # an answer later than this counts as a hang
RETRY_PAUSE_S = 0.25  # how long a reader waits after a 503 (shorter than Retry-After: the drill counts them)
THINK_S = 0.3  # a reader's pause between two submissions, so the stream outlasts the outage
MIN_DOWN_S = 3.0  # each server stays down at least this long (and until enough happened meanwhile)

SETUP = f"""
import json
from annotations.models import CaseSplit, Membership, Role
from tests.factories import ProjectFactory, UserFactory
from tests.workers.test_training_helpers import SPEC, add_case
from workers.ml.research.phantoms import make_phantoms

readers = [UserFactory(username=f"drill-reader-{{i}}", password={PASSWORD!r}) for i in range({READERS})]
stream = ProjectFactory(name="drill: submissions", readers_per_case=2)
claims = ProjectFactory(name="drill: claims", readers_per_case=1)
images = make_phantoms({STREAM_POOL + CLAIM_POOL}, seed=0, spec=SPEC).images
for project in (stream, claims):
    for user in readers:
        Membership.objects.create(project=project, user=user, role=Role.ANNOTATOR)
for i, image in enumerate(images):
    project = stream if i < {STREAM_POOL} else claims
    add_case(project, user=readers[0], image=image, mask=None, split=CaseSplit.POOL)
print("DRILL " + json.dumps({{"stream": stream.pk, "claims": claims.pk}}))
"""


def _table(model) -> str:
    return model._meta.db_table


# ---------------------------------------------------------------------------------------------------- HTTP


@dataclass(frozen=True)
class Call:
    reader: int
    action: str  # claim | editor | submit | release
    started: float  # time.monotonic()
    ended: float
    status: int | None  # None: no answer within the client timeout, or the connection failed
    retry_after: str | None
    body: dict
    error: str = ""


class Reader:
    """One reader's HTTP client; every call is recorded in the shared log."""

    def __init__(self, index: int, url: str, log: list[Call], lock: threading.Lock) -> None:
        self.index, self.url, self.log, self.lock = index, url, log, lock
        self.token = ""

    def call(self, action: str, method: str, path: str, body: dict | None = None) -> Call:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.url}/api/v1{path}", data=data, method=method)  # noqa: S310
        req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Token {self.token}")
        started = time.monotonic()
        status, retry_after, raw, error = None, None, b"", ""
        try:
            with urllib.request.urlopen(req, timeout=CLIENT_TIMEOUT_S) as resp:  # noqa: S310 (our server)
                status, retry_after, raw = resp.status, resp.headers.get("Retry-After"), resp.read()
        except urllib.error.HTTPError as err:
            status, retry_after, raw = err.code, err.headers.get("Retry-After"), err.read()
        except OSError as exc:  # a timeout, a refused or reset connection: no HTTP answer at all
            error = f"{type(exc).__name__}: {exc}"
        try:
            parsed = json.loads(raw) if raw else {}
        except ValueError:
            parsed = {"raw": raw[:300].decode(errors="replace")}
        record = Call(self.index, action, started, time.monotonic(), status, retry_after, parsed, error)
        with self.lock:
            self.log.append(record)
        return record

    def login(self) -> None:
        username = f"drill-reader-{self.index}"
        resp = self.call("login", "POST", "/auth/token", {"username": username, "password": PASSWORD})
        assert resp.status == 200, resp
        self.token = resp.body["token"]


def _disc_png(seed: int, shape: tuple[int, int]) -> str:
    rng = np.random.default_rng(seed)
    cy, cx = rng.integers(10, shape[0] - 10, size=2)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    mask = (((yy - cy) ** 2 + (xx - cx) ** 2) < int(rng.integers(4, 8)) ** 2).astype(np.uint8)
    return base64.b64encode(mask_to_png(mask)).decode()


def _server_errors(log: list[Call]) -> list[Call]:
    """Every call that is a failure in a restart whatever the timing: a 5xx other than 503, a 503 without
    Retry-After, or no answer at all."""
    return [
        c for c in log if c.status is None or (c.status >= 500 and (c.status != 503 or not c.retry_after))
    ]


# ---------------------------------------------------------------------------------------------- the pair


@dataclass
class Drill:
    services: OwnServices
    env: dict[str, str]
    url: str
    dsn: str
    projects: dict[str, int]
    logs: dict[str, Path]
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    def sql(self, query: str, *params) -> list[tuple]:
        import psycopg

        with psycopg.connect(self.dsn, connect_timeout=10) as conn:
            return list(conn.execute(query, params).fetchall())

    def tails(self) -> str:
        """The last lines of the web server's and the worker's output, for a failure message."""
        out = []
        for name, path in self.logs.items():
            lines = path.read_text(errors="replace").splitlines()[-40:] if path.exists() else []
            out.append(f"--- {name} ({path}) ---\n" + "\n".join(lines))
        return "\n".join(out)


def _manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"manage.py {args[0]} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def _spawn(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("ab") as out:
        return subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def _end(proc: subprocess.Popen) -> None:
    stop(proc)
    try:  # whatever is left of its process group (the worker's pool and beat children)
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.fixture(scope="module")
def drill(tmp_path_factory):
    if pg_bin() is None or shutil.which("redis-server") is None:
        _unavailable("the restart drill needs Debian's postgresql and redis-server (its own pair to restart)")
    services = OwnServices(redis_persistent=True)
    urls = services.start()
    tmp = tmp_path_factory.mktemp("drill")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HITL_TEST_", "CELERY_", "DATABASE_"))}
    env.update(
        DJANGO_SETTINGS_MODULE="hitl.settings.local",  # what the run command and deploy/ run
        DATABASE_URL=urls["HITL_TEST_DATABASE_URL"],
        CELERY_BROKER_URL=urls["HITL_TEST_BROKER_URL"],
        HITL_VAR_DIR=str(tmp / "var"),
        MEDIA_ROOT=str(tmp / "media"),
        STATIC_ROOT=str(tmp / "static"),
        HITL_WORKER_HEARTBEAT_SECONDS="1",
        HITL_TORCH_THREADS="1",
        LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
    )
    for folder in ("var", "media", "static"):
        (tmp / folder).mkdir()
    drill = Drill(
        services=services,
        env=env,
        url="",
        dsn=urls["HITL_TEST_DATABASE_URL"].replace("postgres://", "postgresql://", 1),
        projects={},
        logs={"web": tmp / "web.log", "worker": tmp / "worker.log"},
    )
    try:
        _manage(env, "migrate", "--noinput", "-v", "0")
        out = _manage(env, "shell", "-c", SETUP)
        drill.projects = json.loads(next(ln for ln in out.splitlines() if ln.startswith("DRILL "))[6:])
        worker = [sys.executable, "-m", "celery", "-A", "hitl", "worker", "-Q", ",".join(ALL_QUEUES)]
        worker += ["-c", "1", "-n", "drill@%h", "-l", "WARNING", "-B", "--schedule", str(tmp / "beat")]
        drill.procs["worker"] = _spawn(worker, env, drill.logs["worker"])
        port = free_port()
        web = [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            "deploy/gunicorn.conf.py",
            "--bind",
            f"127.0.0.1:{port}",
        ]
        web += ["--workers", "2", "--threads", "4", "hitl.wsgi:application"]
        drill.procs["web"] = _spawn(web, env, drill.logs["web"])
        drill.url = f"http://127.0.0.1:{port}"
        _wait_for_http(f"{drill.url}/healthz", drill.procs["web"])
        wait_until(
            lambda: (
                drill.procs["worker"].poll() is not None
                or drill.sql(f"select count(*) from {_table(WorkerHeartbeat)}")[0][0] > 0
            ),  # noqa: S608
            timeout=120,
            interval=0.5,
        )
        assert drill.procs["worker"].poll() is None, "the worker exited:\n" + drill.tails()
        yield drill
    finally:
        for proc in drill.procs.values():
            _end(proc)
        services.stop()


def _run_readers(target: Callable[[Reader, threading.Event], None], readers: list[Reader]):
    done = threading.Event()
    threads = [threading.Thread(target=target, args=(r, done), daemon=True) for r in readers]
    for t in threads:
        t.start()
    return done, threads


def _readers(drill: Drill, log: list[Call]) -> list[Reader]:
    lock = threading.Lock()
    readers = [Reader(i, drill.url, log, lock) for i in range(READERS)]
    for r in readers:
        r.login()
    return readers


# ------------------------------------------------------------------------------------- Redis restart drill


def test_redis_restart_during_a_stream_of_submissions(drill):
    project = drill.projects["stream"]
    log: list[Call] = []
    readers = _readers(drill, log)
    acked: list[tuple[int, int, int]] = []  # (reader, case, annotation id) of every 201
    outbox = _table(OutboxMessage)
    first_message = drill.sql(f"select coalesce(max(id), 0) from {outbox}")[0][0]  # noqa: S608

    def stream(reader: Reader, done: threading.Event) -> None:
        while not done.is_set():
            claim = reader.call("claim", "POST", f"/projects/{project}/queue/claim")
            if claim.status == 204:
                return  # nothing left for this reader
            if claim.status != 200:
                time.sleep(RETRY_PAUSE_S)
                continue
            case_id = claim.body["case"]
            editor = reader.call("editor", "GET", f"/cases/{case_id}/editor")
            if editor.status != 200:
                time.sleep(RETRY_PAUSE_S)
                continue  # claiming again is idempotent: the same lease
            shape = tuple(editor.body["case"]["shape"])
            body = {
                "mask": {"format": "png_base64", "data": _disc_png(case_id * 10 + reader.index, shape)},
                "base_revision": editor.body.get("head_revision"),
                "time_spent_s": 5.0,
                "proposal_model_version": None,
            }
            while not done.is_set():
                submit = reader.call("submit", "POST", f"/cases/{case_id}/annotations", body)
                if submit.status == 201:
                    acked.append((reader.index, case_id, submit.body["id"]))
                    time.sleep(THINK_S)
                    break
                if submit.status != 503:
                    return  # unexpected: recorded in the log, the assertions below report it
                time.sleep(RETRY_PAUSE_S)

    done, threads = _run_readers(stream, readers)
    redis_up = True
    try:
        wait_until(lambda: len(acked) >= 5 or not any(t.is_alive() for t in threads), timeout=120)
        acked_before = len(acked)
        down_at = time.monotonic()
        drill.services.redis_stop()
        redis_up = False

        def refused() -> int:
            return drill.sql(
                f"select count(*) from {outbox} where id > %s and last_error <> ''",  # noqa: S608
                first_message,
            )[0][0]

        # Down until submissions were acknowledged meanwhile and the outbox had to keep one for later.
        wait_until(
            lambda: (
                (
                    time.monotonic() - down_at >= MIN_DOWN_S
                    and len(acked) - acked_before >= 6
                    and refused() >= 1
                )
                or not any(t.is_alive() for t in threads)
            ),
            timeout=120,
        )
        acked_while_down = len(acked) - acked_before
        drill.services.redis_start()
        redis_up = True
        downtime = time.monotonic() - down_at
        for t in threads:
            t.join(timeout=180)
    finally:
        done.set()
        if not redis_up:
            drill.services.redis_start()
    assert not any(t.is_alive() for t in threads), "a reader is still waiting"

    bad = _server_errors(log)
    assert not bad, f"{len(bad)} failed calls, first: {bad[:3]}\n{drill.tails()}"
    unexpected = [
        c
        for c in log
        if c.status
        not in {"login": {200}, "claim": {200, 204}, "editor": {200}, "submit": {201}}[c.action] | {503}
    ]
    assert not unexpected, f"unexpected answers: {unexpected[:5]}"
    assert len(acked) == STREAM_POOL * 2, f"{len(acked)} submissions acknowledged, {STREAM_POOL * 2} reads"
    assert acked_while_down >= 1, "no submission was acknowledged while Redis was down"

    ids = [a for _r, _c, a in acked]
    present = drill.sql(f"select count(*) from {_table(Annotation)} where id = any(%s)", ids)[0][0]  # noqa: S608
    assert present == len(ids), f"{len(ids) - present} acknowledged submissions are missing"
    stored = drill.sql(
        f"select count(*) from {_table(Annotation)} a join {_table(Case)} c on c.id = a.case_id "  # noqa: S608
        "where c.project_id = %s and a.kind = 'reader'",
        project,
    )[0][0]
    assert stored == len(ids), f"{stored} reader revisions stored, {len(ids)} acknowledged"

    def undelivered() -> list[tuple]:
        return drill.sql(
            f"select id, task, attempts, last_error from {outbox} where id > %s and sent_at is null",  # noqa: S608
            first_message,
        )

    wait_until(lambda: not undelivered(), timeout=120, interval=1)
    messages = drill.sql(
        f"select task, attempts, last_error from {outbox} where id > %s",
        first_message,  # noqa: S608
    )
    resent = [m for m in messages if m[2]]
    assert resent, "the broker refused no outbox message: the outage missed the outbox path"
    assert {m[0] for m in messages} == {"workers.tasks.agreement.agreement_update"}, messages

    # The work they stand for: every case read by both readers has its agreement.
    cases = drill.sql(f"select id from {_table(Case)} where project_id = %s", project)  # noqa: S608
    agreement = _table(Agreement)

    def agreed() -> int:
        return drill.sql(
            f"select count(distinct case_id) from {agreement} where case_id = any(%s)",  # noqa: S608
            [c for (c,) in cases],
        )[0][0]

    wait_until(lambda: agreed() == STREAM_POOL, timeout=120, interval=1)
    print(
        f"\nredis drill: downtime {downtime:.1f} s, submissions acknowledged {len(acked)} "
        f"({acked_while_down} while down), present {present}, "
        f"503s {sum(c.status == 503 for c in log)}, 500s {sum(c.status == 500 for c in log)}, "
        f"calls {len(log)}, outbox created {len(messages)}, delivered {len(messages)}, "
        f"refused by the broker and sent by the sweep {len(resent)}, agreements {agreed()}"
    )


# -------------------------------------------------------------------------------- PostgreSQL restart drill


def test_postgres_restart_during_claims(drill):
    project = drill.projects["claims"]
    log: list[Call] = []
    readers = _readers(drill, log)

    def claims(reader: Reader, done: threading.Event) -> None:
        while not done.is_set():
            claim = reader.call("claim", "POST", f"/projects/{project}/queue/claim")
            if claim.status == 200:
                reader.call("release", "POST", f"/cases/{claim.body['case']}/lease/release")
            else:
                time.sleep(RETRY_PAUSE_S)

    def claimed(since: float) -> set[int]:
        return {c.reader for c in list(log) if c.action == "claim" and c.status == 200 and c.started > since}

    done, threads = _run_readers(claims, readers)
    pg_up = True
    try:
        wait_until(lambda: len(claimed(0.0)) == READERS, timeout=60)
        drill.services.postgres_stop("immediate")  # a crash: connections drop, the next start recovers
        pg_up = False
        down = time.monotonic()
        wait_until(
            lambda: (
                time.monotonic() - down >= MIN_DOWN_S
                and sum(c.status == 503 and c.started > down for c in list(log)) >= 10
            ),
            timeout=60,
        )
        restarting = time.monotonic()
        drill.services.postgres_start()
        pg_up = True
        up = time.monotonic()
        wait_until(lambda: len(claimed(up)) == READERS, timeout=60)
        time.sleep(1.0)  # a few more rounds on the reconnected web workers
    finally:
        done.set()
        if not pg_up:
            drill.services.postgres_start()
    for t in threads:
        t.join(timeout=CLIENT_TIMEOUT_S + 5)
    assert not any(t.is_alive() for t in threads), "a reader is still waiting"

    bad = _server_errors(log)
    assert not bad, f"{len(bad)} failed calls, first: {bad[:3]}\n{drill.tails()}"
    while_down = [c for c in log if c.started > down and c.ended < restarting]
    assert while_down and all(c.status == 503 and c.retry_after for c in while_down), while_down[:5]
    assert all(c.body.get("error", {}).get("code") == "unavailable" for c in while_down), while_down[:3]
    unexpected = [
        c
        for c in log
        if c.status not in {"login": {200}, "claim": {200, 204, 409}, "release": {200, 409}}[c.action] | {503}
    ]
    assert not unexpected, f"unexpected answers: {unexpected[:5]}"
    assert drill.procs["web"].poll() is None, "the web server exited"

    # No reading slot held twice, and each case's slot bookkeeping agrees with its leases.
    holding = ("active", "submitted")
    assignment, case = _table(Assignment), _table(Case)
    twice = drill.sql(
        f"select case_id, slot, count(*) from {assignment} where project_id = %s and status = any(%s) "  # noqa: S608
        "group by case_id, slot having count(*) > 1",
        project,
        list(holding),
    )
    assert twice == [], twice
    books = drill.sql(
        f"select c.id, c.reads_taken, c.slots_mask, count(a.id), coalesce(sum(1 << a.slot), 0) "  # noqa: S608
        f"from {case} c left join {assignment} a on a.case_id = c.id and a.status = any(%s) "
        "where c.project_id = %s group by c.id",
        list(holding),
        project,
    )
    assert all(taken == held <= 1 and mask == bits for _id, taken, mask, held, bits in books), books
    leases = drill.sql(
        f"select reader_id, count(*) from {assignment} where project_id = %s and status = 'active' "  # noqa: S608
        "group by reader_id having count(*) > 1",
        project,
    )
    assert leases == [], leases

    # The worker reconnected too: its heartbeat moves again.
    heartbeat = _table(WorkerHeartbeat)
    last = drill.sql(f"select max(last_seen) from {heartbeat}")[0][0]  # noqa: S608
    wait_until(lambda: drill.sql(f"select max(last_seen) from {heartbeat}")[0][0] > last, timeout=60)  # noqa: S608
    assert drill.procs["worker"].poll() is None, "the worker exited"
    print(
        f"\npostgres drill: downtime {restarting - down:.1f} s until the restart began, "
        f"{up - restarting:.1f} s to start, claims {sum(c.action == 'claim' and c.status == 200 for c in log)}, "
        f"503s {sum(c.status == 503 for c in log)} ({len(while_down)} while down, all 503), "
        f"500s {sum(c.status == 500 for c in log)}, no answer {sum(c.status is None for c in log)}, "
        f"calls {len(log)}, claims after the restart by every reader, slots held twice {len(twice)}"
    )
