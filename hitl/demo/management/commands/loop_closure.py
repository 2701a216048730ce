"""python manage.py loop_closure [--url http://127.0.0.1:8000] [--pool 100] [--every 10]: measure how long the
active-learning loop takes to close on a running service (the run command's web server and worker).

It creates a project of MNI152 axial slices (a pool of `--pool` slices, seed/validation/test slices with
reference labels, like the demo) on this service's database, then acts as a reader over HTTP only: it waits
for the first model, submits `--every` ground-truth corrections through the queue (the last one triggers
the automatic retraining), and from that submission on claims the next case every few seconds (releasing
it when it still shows the old version's proposal) until a claim is served with the new version's proposal.
Prints and optionally writes (--json) the loop closure in seconds with the run's own timings. The service
must be running; nothing here is mocked."""

import base64
import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from annotations.models import CaseSplit, Membership, Modality, Role
from annotations.services.projects import project_create
from hitl.core.storage import mask_to_png
from hitl.demo.management.commands.seed_demo import LABELS, _nifti_bytes, _subset_affine
from hitl.demo.management.commands.seed_demo import Command as SeedDemo
from workers.models import QueryStrategy
from workers.services.datasets import SliceLoader
from workers.services.imports import image_import
from workers.services.samples import demo_volume
from workers.services.training import training_run_start
from workers.services.training_settings import training_settings_update

SEED = {  # as the demo: every 12th slice through the cerebrum, interleaved
    CaseSplit.TRAIN: list(range(42, 140, 12)),
    CaseSplit.VALIDATION: list(range(41, 140, 12)),
    CaseSplit.TEST: list(range(47, 140, 12)),
}
READER = ("demo_annotator", "demo-annotator-pass")
ML_ENGINEER = ("demo_ml", "demo-ml-pass")


class Http:
    def __init__(self, url: str) -> None:
        if not url.startswith(("http://", "https://")):
            raise CommandError("--url must be an http(s) address")
        self.url, self.token = url.rstrip("/"), ""

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.url}/api/v1{path}", data=data, method=method)  # noqa: S310 (http(s) only)
        req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Token {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:  # noqa: S310
                raw = resp.read()
                return resp.status, json.loads(raw) if raw else {}
        except urllib.error.HTTPError as err:
            raw = err.read()
            try:
                return err.code, json.loads(raw)
            except ValueError:
                return err.code, {"detail": raw[:200].decode(errors="replace")}


def _pool_positions(n: int) -> list[int]:
    taken = {z for zs in SEED.values() for z in zs}
    free = [z for z in range(20, 175) if z not in taken]
    if n > len(free):
        raise CommandError(f"at most {len(free)} pool slices")
    return [free[int(i)] for i in np.linspace(0, len(free) - 1, n).round().astype(int)]


class Command(BaseCommand):
    help = "Measure the loop closure on a running service (see the module docstring)."

    def add_arguments(self, parser):
        parser.add_argument("--url", default="http://127.0.0.1:8000")
        parser.add_argument("--pool", type=int, default=100)
        parser.add_argument("--every", type=int, default=10)
        parser.add_argument("--timeout", type=float, default=1200.0)
        parser.add_argument("--json", type=Path, default=None)

    def handle(self, *args, **opts):
        users = SeedDemo()._users()
        pool_z = _pool_positions(opts["pool"])
        project, truth = self._project(users, pool_z, opts["every"])
        http = Http(opts["url"])
        status, body = http.call("POST", "/auth/token", {"username": READER[0], "password": READER[1]})
        if status != 200:
            raise CommandError(f"login failed ({status}): {body}")
        http.token = body["token"]
        t_start = time.monotonic()
        v1 = self._wait(lambda: self._active(http, project.pk), opts["timeout"], "the first model")
        self._log(f"v{v1['number']} active after {time.monotonic() - t_start:.0f} s")
        for i in range(opts["every"]):
            case_id, payload = self._claim(
                http, project.pk, lambda p: p["proposal"] is not None, opts["timeout"]
            )
            self._submit(http, case_id, payload, truth[case_id])
            self._log(f"submitted {i + 1}/{opts['every']} (case {case_id})")
        t0 = time.monotonic()
        claims = 0

        def fresh(p: dict) -> bool:
            prop = p["proposal"]
            return prop is not None and not prop["stale"] and prop["model_version"] > v1["number"]

        while True:
            claims += 1
            case_id, payload = self._claim(http, project.pk, None, opts["timeout"])
            if fresh(payload):
                break
            http.call("POST", f"/cases/{case_id}/lease/release")
            if time.monotonic() - t0 > opts["timeout"]:
                raise CommandError(f"no claim served a new version's proposal within {opts['timeout']:.0f} s")
            time.sleep(3.0)
        closure = time.monotonic() - t0
        result = {
            "pool": opts["pool"],
            "every": opts["every"],
            "loop_closure_s": round(closure, 1),
            "claims_until_new_version": claims,
            "new_version": payload["proposal"]["model_version"],
            "runs": self._runs(http, project.pk),
            "lanes": self._lanes_check(http, project.pk, case_id, payload, opts["url"]),
        }
        self.stdout.write(json.dumps(result, indent=2))
        if opts["json"]:
            opts["json"].write_text(json.dumps(result, indent=2))

    def _lanes_check(self, http: Http, project_id: int, case_id: int, payload: dict, url: str) -> dict:
        """With an explanation quality report running on the batch lane, the reader asks for an interactive
        explanation of the case they hold: how long until it arrives, and whether it came within the
        request (201) or was queued (202)."""
        ml = Http(url)
        _s, body = ml.call("POST", "/auth/token", {"username": ML_ENGINEER[0], "password": ML_ENGINEER[1]})
        ml.token = body["token"]
        status, report = ml.call("POST", f"/projects/{project_id}/explanation-reports", {"max_cases": 8})
        if status != 201:
            return {"skipped": f"report refused ({status}): {report}"}
        self._wait(
            lambda: ml.call("GET", f"/explanation-reports/{report['id']}")[1]["status"] == "running",
            600,
            "the report to start",
        )
        done = {e["method"] for e in payload["explanations"] if not e.get("stale")}
        method = next(
            (
                m["method"]
                for m in payload["explain_catalogue"]
                if m.get("interactive") and m["method"] not in done
            ),
            None,
        )
        if method is None:
            return {"skipped": "every interactive method is already computed for this case"}
        t0 = time.monotonic()
        status, body = http.call("POST", f"/cases/{case_id}/explanations", {"method": method})
        while status == 202 and time.monotonic() - t0 < 120:
            time.sleep(0.5)
            fresh = http.call("GET", f"/cases/{case_id}/editor")[1]
            if any(e["method"] == method and not e.get("stale") for e in fresh["explanations"]):
                status = 200
        seconds = time.monotonic() - t0
        report_status = ml.call("GET", f"/explanation-reports/{report['id']}")[1]["status"]
        return {
            "method": method,
            "http_status": status,
            "seconds": round(seconds, 2),
            "report_status_after": report_status,
        }

    def _log(self, msg: str) -> None:
        self.stdout.write(msg)
        self.stdout.flush()

    @transaction.atomic
    def _project(self, users: dict, pool_z: list[int], every: int):
        project = project_create(
            creator=users["demo_admin"],
            name=f"Loop closure: MNI152, pool of {len(pool_z)} ({int(time.time())})",
            description="Created by manage.py loop_closure.",
            modality=Modality.MR,
            label_classes=LABELS,
        )
        for user, role in (("demo_annotator", Role.ANNOTATOR), ("demo_ml", Role.ML_ENGINEER)):
            Membership.objects.get_or_create(project=project, user=users[user], role=role)
        training_settings_update(
            project=project,
            actor=users["demo_ml"],
            roles={Role.ML_ENGINEER},
            changes={"query_strategy": QueryStrategy.ENTROPY, "auto_retrain_every": every},
        )
        vol = demo_volume()
        for split, zs in {**SEED, CaseSplit.POOL: pool_z}.items():
            affine = _subset_affine(vol.affine, zs) if split != CaseSplit.POOL else vol.affine
            image = vol.image[:, :, zs].astype(np.float32)
            mask = (
                _nifti_bytes(vol.labels[:, :, zs].astype(np.uint8), affine)
                if split != CaseSplit.POOL
                else None
            )
            image_import(
                project=project,
                user=users["demo_data"],
                data=_nifti_bytes(image, affine),
                mask_data=mask,
                split=split,
            )
        pool = list(project.cases.filter(split=CaseSplit.POOL).order_by("image_id", "slice_index"))
        if len(pool) != len(pool_z):
            raise CommandError(f"expected {len(pool_z)} pool cases, the import made {len(pool)}")
        # The reader's truth: the reference labels of each pool slice, oriented as the importer stored the
        # slice (found by matching the stored pixels against the source volume, not assumed).
        loader = SliceLoader()
        orient = _orientation(loader.raw(pool[0]), vol.image[:, :, pool_z[0]])
        truth = {
            c.pk: orient(vol.labels[:, :, z]).astype(np.uint8) for c, z in zip(pool, pool_z, strict=True)
        }
        training_run_start(project=project, requested_by=users["demo_ml"], trigger="seed")
        return project, truth

    def _wait(self, check, timeout: float, what: str):
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            value = check()
            if value:
                return value
            time.sleep(2.0)
        raise CommandError(f"timed out waiting for {what}")

    def _active(self, http: Http, project_id: int) -> dict | None:
        _s, body = http.call("GET", f"/projects/{project_id}/model-versions")
        return next((v for v in body.get("results", []) if v["state"] == "active"), None)

    def _claim(self, http: Http, project_id: int, ready, timeout: float) -> tuple[int, dict]:
        status, claim = http.call("POST", f"/projects/{project_id}/queue/claim")
        if status not in (200, 201):
            raise CommandError(f"claim failed ({status}): {claim}")
        case_id = claim["case"]

        def editor_when_ready() -> dict | None:
            payload = http.call("GET", f"/cases/{case_id}/editor")[1]
            return payload if ready is None or ready(payload) else None

        return case_id, self._wait(editor_when_ready, timeout, f"a proposal for case {case_id}")

    def _submit(self, http: Http, case_id: int, payload: dict, mask: np.ndarray) -> None:
        body = {
            "mask": {"format": "png_base64", "data": base64.b64encode(mask_to_png(mask)).decode()},
            "base_revision": payload["head_revision"],
            "time_spent_s": 30.0,
            "proposal_model_version": payload["proposal"]["model_version_id"]
            if payload["proposal"]
            else None,
        }
        status, resp = http.call("POST", f"/cases/{case_id}/annotations", body)
        if status != 201:
            raise CommandError(f"submit failed ({status}): {resp}")

    def _runs(self, http: Http, project_id: int) -> list[dict]:
        _s, body = http.call("GET", f"/projects/{project_id}/training-runs")
        keys = ("id", "trigger", "status", "created_at", "started_at", "finished_at", "outcome")
        return [{k: r.get(k) for k in keys} for r in body.get("results", [])]


def _orientation(stored: np.ndarray, source: np.ndarray):
    """The one of the 8 flips/transposes of `source` that reproduces `stored` (up to intensity scaling)."""
    variants = []
    for transpose in (False, True):
        for k in range(4):
            variants.append(lambda a, t=transpose, k=k: np.ascontiguousarray(np.rot90(a.T if t else a, k)))

    def distance(f) -> float:
        cand = f(source).astype(np.float64)
        if cand.shape != stored.shape:
            return np.inf
        a, b = cand - cand.mean(), stored.astype(np.float64) - stored.mean()
        return -float((a * b).sum() / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))

    best = min(variants, key=distance)
    if distance(best) > -0.99:
        raise CommandError("could not match the stored slice to the source volume")
    return best
