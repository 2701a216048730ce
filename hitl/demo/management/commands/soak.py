"""python manage.py soak [--url http://127.0.0.1:8000] [--readers 50] [--minutes 30] [--pace 60] [--json OUT]:
the reliability drill's soak (issue 16) against a running service (the run command's web server and workers).

It creates a project of MNI152 axial slices on this service's database (seed/validation/test slices with
reference labels as in `loop_closure`, and a pool of copies of the demo volume large enough that the readers
never run out, with automatic retraining every `--retrain-every` submissions), logs `--readers` reader users
in over HTTP and waits for the first model. Then each reader, one thread each, over HTTP only: claims the
next case (the timed claim latency), opens the editor payload, thinks for a random time around `--pace`
seconds (heartbeating the lease at the editor's cadence) and submits the reference labels. Every
`--sample` seconds it reads the service's processes from /proc (web = gunicorn, and each Celery lane, with
their children): CPU and RSS. At the end it checks through the ORM that every acknowledged submission is
stored and that no case was held or read by more readers than it has slots, and reports the training runs
and versions of the soak. Prints and optionally writes (--json) the figures; exits non-zero on a lost
submission, a double assignment or any 5xx. The service must be running; nothing here is mocked."""

import base64
import json
import math
import os
import random
import threading
import time
import urllib.error
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils import timezone

from annotations.models import Annotation, Assignment, AssignmentStatus, CaseSplit, Membership, Modality, Role
from annotations.selectors.reading_policy import case_readers
from annotations.services.projects import project_create
from hitl.core.storage import mask_to_png
from hitl.demo.management.commands.loop_closure import SEED, Http, _orientation, _pool_positions
from hitl.demo.management.commands.seed_demo import LABELS, _nifti_bytes, _subset_affine
from hitl.demo.management.commands.seed_demo import Command as SeedDemo
from workers.models import ModelVersion, QueryStrategy, TrainingRun
from workers.services.datasets import SliceLoader
from workers.services.imports import image_import
from workers.services.samples import demo_volume
from workers.services.training import training_run_start
from workers.services.training_settings import training_settings_update

READER_PASSWORD = "soak-reader-pass-7d2f"  # noqa: S105 (a throwaway account of a throwaway project)
GROUPS = {"web": "gunicorn", "interactive": "-n interactive@", "batch": "-n batch@"}
TRANSPORT = (urllib.error.URLError, OSError, TimeoutError, ValueError)

# --- pure computations (known-answer tests: tests/demo/test_soak_metrics.py) ---------------------------------


def percentile(values: list[float], p: float) -> float | None:
    """The nearest-rank percentile: the smallest value with at least p % of the values at or below it."""
    if not values:
        return None
    ranked = sorted(values)
    return ranked[max(0, math.ceil(p / 100 * len(ranked)) - 1)]


def latency_summary(seconds: list[float]) -> dict:
    """p50/p95/p99/max of latencies, in milliseconds."""
    out: dict = {"n": len(seconds)}
    for name, p in (("p50", 50), ("p95", 95), ("p99", 99), ("max", 100)):
        v = percentile(seconds, p)
        out[f"{name}_ms"] = None if v is None else round(v * 1000, 1)
    return out


def rss_growth(samples: list[tuple[float, int]], *, warmup_s: float, window_s: float = 120.0) -> dict:
    """RSS growth after warm-up: the mean over the last `window_s` seconds against the mean over the
    `window_s` seconds that follow the warm-up; `samples` are (seconds since start, bytes)."""
    if not samples:
        return {"warmup_mb": None, "end_mb": None, "growth": None}
    t_end = samples[-1][0]
    base = [r for t, r in samples if warmup_s <= t < warmup_s + window_s]
    end = [r for t, r in samples if t >= t_end - window_s]
    if not base or not end or not sum(base):
        return {"warmup_mb": None, "end_mb": None, "growth": None}
    b, e = sum(base) / len(base), sum(end) / len(end)
    return {"warmup_mb": round(b / 2**20, 1), "end_mb": round(e / 2**20, 1), "growth": round((e - b) / b, 4)}


def parse_stat(text: str) -> tuple[int, int]:
    """(parent pid, CPU clock ticks) from /proc/PID/stat: utime + stime + the reaped children's cutime +
    cstime, so that a group's total stays monotonic when one of its children exits. The command name may
    hold spaces and parentheses: fields are counted after its last ')'."""
    rest = text[text.rindex(")") + 2 :].split()
    return int(rest[1]), sum(int(v) for v in rest[11:15])


def parse_vm_rss(text: str) -> int:
    """Resident set size in bytes from /proc/PID/status (0 for a kernel thread or a zombie)."""
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def max_concurrent(intervals: list[tuple[float, float]]) -> int:
    """The most intervals [start, end) open at one moment (an end at t closes before a start at t)."""
    events = sorted([(s, 1) for s, _e in intervals] + [(e, -1) for _s, e in intervals])
    most = now = 0
    for _t, step in events:
        now += step
        most = max(most, now)
    return most


def think_time(rng: random.Random, pace: float) -> float:
    """A reader's time on one case: exponential around `pace`, clipped to [pace / 4, 3 pace]."""
    return min(3 * pace, max(pace / 4, rng.expovariate(1 / pace)))


# --- the service's processes, from /proc -------------------------------------------------------------------


def _read(path: str) -> str:
    try:
        with open(path, "rb") as f:  # noqa: PTH123 (many tiny reads of /proc)
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def _cmdline(pid: int) -> str:
    return _read(f"/proc/{pid}/cmdline").replace("\0", " ").strip()


def _parents() -> dict[int, int]:
    out = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (stat := _read(f"/proc/{name}/stat")):
            out[int(name)] = parse_stat(stat)[0]
    return out


def _descendants(root: int, parents: dict[int, int]) -> list[tuple[int, int]]:
    """(pid, depth below `root`) of `root` (depth 0) and everything under it."""
    out, frontier, depth = [(root, 0)], [root], 0
    while frontier:
        depth += 1
        frontier = [pid for pid, ppid in parents.items() if ppid in frontier]
        out += [(pid, depth) for pid in frontier]
    return out


def service_groups(bind: str) -> dict[str, list[tuple[int, int]]]:
    """The run command's processes by group, as (pid, depth): the gunicorn master bound to `bind`
    (host:port) tells the run command (its parent); each of that one's children whose command line names a
    group (depth 0), with all of its descendants, is that group ({} when no gunicorn is bound there).
    Depth <= 1 are the long-lived processes (a gunicorn master and its workers, a Celery worker and its
    pool processes); deeper ones live for one piece of work (a training run's own process)."""
    parents = _parents()
    masters = [
        pid
        for pid in parents
        if "gunicorn" in (cmd := _cmdline(pid)) and bind in cmd and "gunicorn" not in _cmdline(parents[pid])
    ]
    if not masters:
        return {}
    root = parents[masters[0]]
    groups: dict[str, list[tuple[int, int]]] = {g: [] for g in GROUPS}
    for child in (pid for pid, ppid in parents.items() if ppid == root):
        cmd = _cmdline(child)
        group = next((g for g, mark in GROUPS.items() if mark in cmd), None)
        if group:
            groups[group] += _descendants(child, parents)
    return groups


@dataclass
class Sampler:
    """Samples the groups' CPU ticks and RSS every `every` seconds in a thread until `stop` is set."""

    bind: str
    every: float
    stop: threading.Event
    t0: float = field(default_factory=time.monotonic)
    rows: list[dict] = field(default_factory=list)

    def run(self) -> None:
        while True:
            self.rows.append(self.sample())
            if self.stop.wait(self.every):
                self.rows.append(self.sample())
                return

    def sample(self) -> dict:
        row: dict = {
            "t": round(time.monotonic() - self.t0, 1),
            "load1": float(_read("/proc/loadavg").split()[0]),
        }
        for group, pids in service_groups(self.bind).items():
            ticks = rss = 0
            resident: dict[str, int] = {}
            for pid, depth in pids:
                if stat := _read(f"/proc/{pid}/stat"):
                    ticks += parse_stat(stat)[1]
                    one = parse_vm_rss(_read(f"/proc/{pid}/status"))
                    rss += one
                    if depth <= 1:
                        resident[str(pid)] = one
            row[group] = {"pids": len(pids), "ticks": ticks, "rss": rss, "resident": resident}
        return row


def resident_report(series: list[tuple[float, dict]], *, warmup_s: float) -> dict:
    """The group's long-lived processes (depth <= 1): the growth of their sum and of each one that lived
    through the whole soak (the largest is the verdict's figure), and the peak of the short-lived rest
    (a training run's own process, whose memory goes back to the OS when it exits)."""
    rows = [(t, g.get("resident", {})) for t, g in series]
    total = rss_growth([(t, sum(r.values())) for t, r in rows], warmup_s=warmup_s)
    each = {}
    for pid in set.intersection(*(set(r) for _t, r in rows)) if rows else set():
        each[pid] = rss_growth([(t, r[pid]) for t, r in rows], warmup_s=warmup_s)
    growths = [g["growth"] for g in each.values() if g["growth"] is not None]
    transient = [g["rss"] - sum(g.get("resident", {}).values()) for _t, g in series]
    return {
        "rss_resident": total,
        "rss_resident_mb_series": [[t, round(sum(r.values()) / 2**20, 1)] for t, r in rows],
        "rss_per_process": each,
        "rss_max_process_growth": max(growths) if growths else None,
        "rss_short_lived_peak_mb": round(max(transient, default=0) / 2**20, 1),
    }


def process_report(rows: list[dict], *, warmup_s: float) -> dict:
    """Per group: CPU % of one core over the soak, RSS series (MB) and growth after warm-up; load average."""
    hz = os.sysconf("SC_CLK_TCK")
    out: dict = {}
    for group in GROUPS:
        series = [(r["t"], r[group]) for r in rows if group in r]
        if len(series) < 2:
            out[group] = {"found": False}
            continue
        span = series[-1][0] - series[0][0]
        cpu = (series[-1][1]["ticks"] - series[0][1]["ticks"]) / hz / max(span, 1e-9) * 100
        out[group] = {
            "found": True,
            "processes": series[-1][1]["pids"],
            "cpu_percent_of_one_core": round(cpu, 1),
            "rss": rss_growth([(t, g["rss"]) for t, g in series], warmup_s=warmup_s),
            "rss_mb_series": [[t, round(g["rss"] / 2**20, 1)] for t, g in series],
            **resident_report(series, warmup_s=warmup_s),
        }
    loads = [r["load1"] for r in rows]
    out["load1"] = {"mean": round(sum(loads) / len(loads), 2), "max": max(loads)} if loads else {}
    out["cores"] = os.cpu_count()
    return out


# --- the readers -------------------------------------------------------------------------------------------


@dataclass
class Tally:
    """What every reader saw, shared between the threads (one lock)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    claims_s: list[float] = field(default_factory=list)
    acks: list[dict] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    transport: Counter = field(default_factory=Counter)
    heartbeats: int = 0

    def status(self, what: str, code: int) -> None:
        with self.lock:
            self.statuses[f"{what} {code}"] += 1


@dataclass
class Reader:
    http: Http
    username: str
    project_id: int
    truth: dict[int, np.ndarray]
    pace: float
    rng: random.Random
    tally: Tally
    stop: threading.Event
    releases: int = 0

    def run(self) -> None:
        if self.stop.wait(self.rng.uniform(0, self.pace)):  # staggered first claims
            return
        while not self.stop.is_set():
            try:
                self.one_case()
            except TRANSPORT as exc:  # the service did not answer: counted, and the reader carries on
                with self.tally.lock:
                    self.tally.transport[type(exc).__name__] += 1
                self.stop.wait(5.0)

    def call(self, what: str, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        status, resp = self.http.call(method, path, body)
        self.tally.status(what, status)
        return status, resp

    def one_case(self) -> None:
        t0 = time.monotonic()
        status, claim = self.call("claim", "POST", f"/projects/{self.project_id}/queue/claim")
        with self.tally.lock:
            self.tally.claims_s.append(time.monotonic() - t0)
        if status != 200:  # 204: the queue is empty for this reader; 409: a concurrent claim won
            self.stop.wait(self.pace if status == 204 else 1.0)
            return
        case_id = claim["case"]
        status, payload = self.call("editor", "GET", f"/cases/{case_id}/editor")
        if status != 200:
            return
        if self.think(case_id, claim["expires_at"]):
            self.submit(case_id, payload)
        else:  # the soak ended while this reader was reading: the case goes back to the queue
            self.call("release", "POST", f"/cases/{case_id}/lease/release")

    def think(self, case_id: int, expires_at: str) -> bool:
        """Read for a random time, heartbeating as the editor does (at once, then every third of the lease,
        between 5 and 60 s); False when the soak ended first."""
        deadline = time.monotonic() + think_time(self.rng, self.pace)
        lease_s = (datetime.fromisoformat(expires_at) - timezone.now()).total_seconds()
        every = max(5.0, min(60.0, lease_s / 3))
        while True:
            self.call("heartbeat", "POST", f"/cases/{case_id}/lease/heartbeat")
            with self.tally.lock:
                self.tally.heartbeats += 1
            wait = min(every, deadline - time.monotonic())
            if self.stop.wait(max(0.0, wait)):
                return False
            if time.monotonic() >= deadline:
                return True

    def submit(self, case_id: int, payload: dict) -> None:
        body = {
            "mask": {"format": "png_base64", "data": _b64(mask_to_png(self.truth[case_id]))},
            "base_revision": payload["head_revision"],
            "time_spent_s": round(self.pace, 1),
            "proposal_model_version": (payload["proposal"] or {}).get("model_version_id"),
        }
        status, resp = self.call("submit", "POST", f"/cases/{case_id}/annotations", body)
        if status == 201:
            with self.tally.lock:
                self.tally.acks.append({"case": case_id, "annotation": resp["id"], "reader": self.username})


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def server_errors(statuses: Counter) -> int:
    """The 5xx answers among statuses counted as "what code"."""
    return sum(n for key, n in statuses.items() if int(key.split()[1]) >= 500)


# --- the command -------------------------------------------------------------------------------------------


class Command(BaseCommand):
    help = "A soak of many readers at a clinical pace on a running service (see the module docstring)."

    def add_arguments(self, parser):
        parser.add_argument("--url", default="http://127.0.0.1:8000")
        parser.add_argument("--readers", type=int, default=50)
        parser.add_argument("--minutes", type=float, default=30.0)
        parser.add_argument("--pace", type=float, default=60.0, help="mean seconds a reader spends on a case")
        parser.add_argument("--retrain-every", type=int, default=100)
        parser.add_argument("--warmup", type=float, default=5.0, help="minutes before the RSS baseline")
        parser.add_argument("--sample", type=float, default=15.0, help="seconds between process samples")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument(
            "--timeout", type=float, default=1800.0, help="seconds to wait for the first model"
        )
        parser.add_argument("--json", type=Path, default=None)

    def handle(self, *args, **opts):
        expected = opts["readers"] * opts["minutes"] * 60 / opts["pace"]
        project, truth = self._project(opts, pool_min=math.ceil(1.2 * expected))
        self._log(f"project {project.pk}: {len(truth)} pool cases for ~{expected:.0f} expected submissions")
        https = self._logins(opts, project)
        self._wait_model(https[0][1], project.pk, opts["timeout"])
        tally, stop = Tally(), threading.Event()
        bind = opts["url"].split("://", 1)[1].split("/", 1)[0]
        sampler = Sampler(bind=bind, every=opts["sample"], stop=stop)
        rng = random.Random(opts["seed"])
        readers = [
            Reader(http, name, project.pk, truth, opts["pace"], random.Random(rng.random()), tally, stop)
            for name, http in https
        ]
        started = timezone.now()
        threads = [threading.Thread(target=r.run, daemon=True) for r in [sampler, *readers]]
        for t in threads:
            t.start()
        self._soak(stop, tally, opts["minutes"] * 60)
        for t in threads:
            t.join(timeout=120)
        result = self._result(opts, project, tally, sampler, started, expected)
        self.stdout.write(json.dumps(result, indent=2))
        if opts["json"]:
            opts["json"].write_text(json.dumps(result, indent=2) + "\n")
        verdict = result["verdict"]
        if verdict["lost"] or verdict["double_assignments"] or verdict["server_errors"]:
            raise CommandError(f"the soak failed: {verdict}")

    def _log(self, msg: str) -> None:
        self.stdout.write(f"[{time.strftime('%H:%M:%S')}] {msg}")
        self.stdout.flush()

    def _soak(self, stop: threading.Event, tally: Tally, seconds: float) -> None:
        t0 = time.monotonic()
        while not stop.wait(min(60.0, max(0.0, seconds - (time.monotonic() - t0)))):
            if time.monotonic() - t0 >= seconds:
                stop.set()
                break
            with tally.lock:
                done, bad = len(tally.acks), server_errors(tally.statuses)
            self._log(f"{(time.monotonic() - t0) / 60:.1f} min: {done} submissions, {bad} 5xx")
        self._log("soak over: readers finish the request they are in")

    # --- setup (ORM, this service's database) ---

    @transaction.atomic
    def _project(self, opts: dict, *, pool_min: int):
        users = SeedDemo()._users()
        project = project_create(
            creator=users["demo_admin"],
            name=f"Soak: {opts['readers']} readers at {opts['pace']:.0f} s ({int(time.time())})",
            description="Created by manage.py soak.",
            modality=Modality.MR,
            label_classes=LABELS,
        )
        Membership.objects.get_or_create(project=project, user=users["demo_ml"], role=Role.ML_ENGINEER)
        for name in self._reader_names(opts["readers"]):
            Membership.objects.get_or_create(project=project, user=self._reader(name), role=Role.ANNOTATOR)
        training_settings_update(
            project=project,
            actor=users["demo_ml"],
            roles={Role.ML_ENGINEER},
            changes={"query_strategy": QueryStrategy.ENTROPY, "auto_retrain_every": opts["retrain_every"]},
        )
        truth = self._import(project, users["demo_data"], pool_min)
        training_run_start(project=project, requested_by=users["demo_ml"], trigger="seed")
        return project, truth

    @staticmethod
    def _reader_names(n: int) -> list[str]:
        return [f"soak_reader_{i:02d}" for i in range(1, n + 1)]

    @staticmethod
    def _reader(name: str):
        user, created = get_user_model().objects.get_or_create(username=name)
        if created or not user.check_password(READER_PASSWORD):
            user.set_password(READER_PASSWORD)
            user.save()
        return user

    def _import(self, project, user, pool_min: int) -> dict[int, np.ndarray]:
        """The labelled seed/validation/test slices once, then copies of the volume's free slices (intensity
        offset by the copy's number, so each is a new image) until the pool holds `pool_min` cases; returns
        each pool case's reference labels, oriented as the importer stored the slice."""
        vol = demo_volume()
        for split, zs in SEED.items():
            affine = _subset_affine(vol.affine, zs)
            labels = _nifti_bytes(vol.labels[:, :, zs].astype(np.uint8), affine)
            data = _nifti_bytes(vol.image[:, :, zs].astype(np.float32), affine)
            image_import(project=project, user=user, data=data, mask_data=labels, split=split)
        free = _pool_positions(len(set(range(20, 175)) - {z for zs in SEED.values() for z in zs}))
        copies = math.ceil(pool_min / len(free))
        for k in range(copies):
            data = _nifti_bytes(vol.image[:, :, free].astype(np.float32) + k, vol.affine)
            image_import(project=project, user=user, data=data, split=CaseSplit.POOL)
        pool = list(project.cases.filter(split=CaseSplit.POOL).order_by("image_id", "slice_index"))
        if len(pool) != copies * len(free):
            raise CommandError(f"expected {copies * len(free)} pool cases, the import made {len(pool)}")
        orient = _orientation(SliceLoader().raw(pool[0]), vol.image[:, :, free[0]])
        zs = free * copies
        return {c.pk: orient(vol.labels[:, :, z]).astype(np.uint8) for c, z in zip(pool, zs, strict=True)}

    def _logins(self, opts: dict, project) -> list[tuple[str, Http]]:
        """Each reader logs in over HTTP (POST /auth/token), waiting out the login throttle's 429s."""
        out = []
        for name in self._reader_names(opts["readers"]):
            http = Http(opts["url"])
            for _attempt in range(30):
                status, body = http.call(
                    "POST", "/auth/token", {"username": name, "password": READER_PASSWORD}
                )
                if status != 429:
                    break
                time.sleep(5.0)
            if status != 200:
                raise CommandError(f"{name} could not log in ({status}): {body}")
            http.token = body["token"]
            out.append((name, http))
        self._log(f"{len(out)} readers logged in")
        return out

    def _wait_model(self, http: Http, project_id: int, timeout: float) -> None:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            _s, body = http.call("GET", f"/projects/{project_id}/model-versions")
            if any(v["state"] == "active" for v in body.get("results", [])):
                self._log(f"first model active after {time.monotonic() - t0:.0f} s")
                return
            time.sleep(5.0)
        raise CommandError("timed out waiting for the first model")

    # --- checks (ORM) and the report ---

    def _result(self, opts: dict, project, tally: Tally, sampler: Sampler, started, expected: float) -> dict:
        minutes = (timezone.now() - started).total_seconds() / 60
        lost = self._lost(tally.acks)
        double = self._double(project)
        return {
            "readers": opts["readers"],
            "minutes": opts["minutes"],
            "pace_s": opts["pace"],
            "retrain_every": opts["retrain_every"],
            "warmup_min": opts["warmup"],
            "pool": project.cases.filter(split=CaseSplit.POOL).count(),
            "expected_submissions": round(expected),
            "submissions": len(tally.acks),
            "submissions_per_minute": round(len(tally.acks) / max(minutes, 1e-9), 1),
            "claim_latency_http": latency_summary(tally.claims_s),
            "statuses": dict(sorted(tally.statuses.items())),
            "transport_errors": dict(tally.transport),
            "heartbeats": tally.heartbeats,
            "lost": lost,
            "double": double,
            "training": self._training(project, started),
            "processes": process_report(sampler.rows, warmup_s=opts["warmup"] * 60),
            "verdict": {
                "lost": len(lost["missing"]),
                "double_assignments": double["cases_over_read"] + double["cases_over_held"],
                "server_errors": server_errors(tally.statuses),
            },
        }

    @staticmethod
    def _lost(acks: list[dict]) -> dict:
        """Acknowledged submissions (201) that are not stored, as the reader's case and author."""
        stored = {
            a["pk"]: a
            for a in Annotation.objects.filter(pk__in=[a["annotation"] for a in acks]).values(
                "pk", "case_id", "author__username"
            )
        }
        missing = [
            a
            for a in acks
            if (s := stored.get(a["annotation"])) is None
            or (s["case_id"], s["author__username"]) != (a["case"], a["reader"])
        ]
        return {"acknowledged": len(acks), "present": len(acks) - len(missing), "missing": missing[:20]}

    @staticmethod
    def _double(project) -> dict:
        """Cases read (submitted) by more readers than their slots, and cases whose leases, as intervals
        from claim to end (submitted, released, expired; now for one still active), overlapped more than
        their slots at some moment."""
        now = timezone.now()
        by_case: dict[int, list] = {}
        for a in Assignment.objects.filter(project=project).values(
            "case_id", "status", "claimed_at", "finished_at"
        ):
            by_case.setdefault(a["case_id"], []).append(a)
        cases = {c.pk: c for c in project.cases.filter(pk__in=by_case)}
        over_read, over_held = [], []
        for case_id, rows in by_case.items():
            slots = case_readers(project=project, case=cases[case_id])
            if sum(r["status"] == AssignmentStatus.SUBMITTED for r in rows) > slots:
                over_read.append(case_id)
            spans = [(r["claimed_at"].timestamp(), (r["finished_at"] or now).timestamp()) for r in rows]
            if max_concurrent(spans) > slots:
                over_held.append(case_id)
        return {
            "cases_claimed": len(by_case),
            "cases_over_read": len(over_read),
            "cases_over_held": len(over_held),
            "examples": sorted(set(over_read + over_held))[:20],
        }

    @staticmethod
    def _training(project, started) -> dict:
        runs = list(TrainingRun.objects.filter(project=project, created_at__gte=started).order_by("id"))
        versions = ModelVersion.objects.filter(project=project, promoted_at__gte=started).order_by("number")
        return {
            "runs": len(runs),
            "by_status": dict(Counter(r.status for r in runs)),
            "run_seconds": [
                round((r.finished_at - r.started_at).total_seconds(), 1)
                for r in runs
                if r.started_at and r.finished_at
            ],
            "versions_promoted": [v.number for v in versions],
        }
