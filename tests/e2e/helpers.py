"""Shared set-up for the browser tests: a project with an active (tiny, untrained) model version whose
proposals, uncertainty maps, explanations and queue order are real outputs of the services."""

import threading
from contextlib import contextmanager

import numpy as np

from annotations.models import Role
from tests.workers.test_training_helpers import make_version, seed_project
from workers.models import VersionState
from workers.services.proposals import explanations_compute, proposals_compute
from workers.services.scoring import scoring_run

SERVING = threading.Lock()  # held by the serial live server (SQLite) while it answers a request
ACCEPTING = threading.Event()  # set while a test runs; after it, the serial server drops what is left


@contextmanager
def server_idle():
    """Keep the live server between requests while the test itself uses the database. On SQLite (an
    in-memory shared-cache database in tests) a read beside a request the page still has in flight fails
    with "database table is locked"; on PostgreSQL the lock is never held and this costs nothing. Never wait
    for the page inside it: the page's next request would wait for the test."""
    with SERVING:
        yield


def reading_world(project, member, *, n_pool: int = 3) -> dict:
    owner = member(Role.ML_ENGINEER)
    pool = seed_project(project, owner, n_train=0, n_val=0, n_test=0, n_pool=n_pool)["pool"]
    version = make_version(project, number=1, state=VersionState.ACTIVE)
    ids = [c.pk for c in pool]
    proposals_compute(version_id=version.pk, case_ids=ids)
    explanations_compute(version_id=version.pk, case_ids=ids)
    scoring_run(project_id=project.pk, version_id=version.pk)
    return {"pool": pool, "version": version, "owner": owner}


def editor_state(page) -> dict:
    """The open case's id, size and the mask as the editor holds it (a numpy array)."""
    data = page.evaluate(
        """() => { const e = window.hitlEditor; return {case: e.session.caseId, w: e.viewer.width,
        h: e.viewer.height, mask: Array.from(e.history.mask), proposal: e.session.proposalMask ?
        Array.from(e.session.proposalMask) : null, undo: e.history.undoStack.length,
        redo: e.history.redoStack.length}; }"""
    )
    shape = (data["h"], data["w"])
    data["mask"] = np.array(data["mask"], dtype=np.uint8).reshape(shape)
    if data["proposal"] is not None:
        data["proposal"] = np.array(data["proposal"], dtype=np.uint8).reshape(shape)
    return data


def client_xy(page, x: float, y: float) -> tuple[float, float]:
    """Image coordinates -> page coordinates of the editor canvas."""
    cx, cy = page.evaluate("([x, y]) => window.hitlEditor.viewer.toClient(x, y)", [x, y])
    return cx, cy


def drag(page, points: list[tuple[float, float]], steps: int = 4) -> None:
    """Press at the first image point, move through the others, release."""
    x, y = client_xy(page, *points[0])
    page.mouse.move(x, y)
    page.mouse.down()
    for p in points[1:]:
        x, y = client_xy(page, *p)
        page.mouse.move(x, y, steps=steps)
    page.mouse.up()


def wait_ready(page, *, other_than: int | None = None) -> None:
    page.wait_for_selector("#editor[data-state=ready]")
    if other_than is not None:
        page.wait_for_function("(id) => window.hitlEditor.session.caseId !== id", arg=other_than)


def _browser_own(request) -> bool:
    """The favicon fetch Chromium starts by itself, aborted when the test navigates on (net::ERR_ABORTED):
    not a request of the app's, and no failure of the server's."""
    return request.url.endswith("/favicon.svg") and "ERR_ABORTED" in (request.failure or "")


def watch(page) -> None:
    """Record on the page what must not happen unless a test expects it: JavaScript exceptions, console
    errors and failed requests (HTTP >= 400, or no answer). A test that provokes a failure on purpose lists
    it with `page.expect_failures(status, url_part)`; the fixture checks the rest at the end."""
    page.js_errors, page.console_errors, page.failed_requests, page.expected = [], [], [], []
    page.on("pageerror", lambda exc: page.js_errors.append(str(exc)))
    page.on("console", lambda msg: msg.type == "error" and page.console_errors.append(msg.text))
    page.on("response", lambda r: r.status >= 400 and page.failed_requests.append((r.status, r.url)))
    page.on("requestfailed", lambda r: _browser_own(r) or page.failed_requests.append((0, r.url)))
    page.expect_failures = lambda status, part: page.expected.append((status, part))


def unexpected(page) -> list[str]:
    """What went wrong in the page that its test did not announce."""

    def ok(status: int, url: str) -> bool:
        return any(status == s and part in url for s, part in page.expected)

    failed = [f"{status} {url}" for status, url in page.failed_requests if not ok(status, url)]
    # Chromium logs every failed fetch as a console error; those are judged by their request above.
    console = [m for m in page.console_errors if "Failed to load resource" not in m]
    return [*page.js_errors, *console, *failed]
