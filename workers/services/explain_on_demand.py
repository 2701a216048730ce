"""A reader asks for an explanation the pipeline has not made for this case yet.

Cost policy (workers.ml.explain.explanations.is_interactive): an interactive method (one forward and at most one
backward pass) is computed now, in the request, and stored like the pipeline's maps; an expensive one is
queued on the `explain` queue (through the outbox) and appears in the case payload when done. Either way the
result is cached: one row per (case, model version, method), so asking again costs nothing.
"""

import logging
import time
from typing import Literal

from django.conf import settings
from django.db import transaction

from annotations.models import Case
from hitl.core import task_names
from hitl.core.audit import audit_record
from hitl.core.errors import ConflictError
from hitl.core.lanes import INTERACTIVE
from hitl.core.outbox import outbox_enqueue
from hitl.core.types import User
from workers.ml.explain.policy import is_interactive, methods_for_arch
from workers.models import Explanation, ModelVersion
from workers.services.registry import active_version

log = logging.getLogger(__name__)

EXPLAIN_TASK = task_names.EXPLANATION_COMPUTE

Outcome = Literal["ready", "computed", "queued"]
OUTCOMES: tuple[Outcome, ...] = ("ready", "computed", "queued")


def explanation_request(*, case: Case, method: str, user: User) -> tuple[Outcome, Explanation | None]:
    """("ready", row) when the active version already explains the case with `method`; ("computed", row)
    after computing an interactive method now; ("queued", None) after enqueueing an expensive one.
    Raises ConflictError("no_model") without an active version and ConflictError("method_unavailable") for a
    method the active model's architecture cannot use (the same request succeeds once such a model is)."""
    version = active_version(project=case.project_id)
    if version is None:
        raise ConflictError("no_model", "this project has no active model to explain the case with yet")
    allowed = methods_for_arch(version.arch)
    if method not in allowed:
        raise ConflictError(
            "method_unavailable",
            f"{method!r} cannot explain the active model; choose from {', '.join(allowed)}",
        )
    existing = _existing(case, version, method)
    if existing is not None:
        return "ready", existing
    interactive = is_interactive(method)
    if interactive and settings.HITL_EXPLAIN_IN_WEB:
        return "computed", _compute_here(case, version, method)
    with transaction.atomic():
        outbox_enqueue(  # a reader waits for an interactive method: its lane never waits behind batch work
            task=EXPLAIN_TASK,
            kwargs={"version_id": version.pk, "case_ids": [case.pk], "methods": [method]},
            queue=INTERACTIVE if interactive else "",
        )
        if not interactive:
            audit_record(
                actor=user,
                project=case.project,
                action="explanation.request",
                target=case,
                details={"method": method, "model_version": version.number},
            )
    row = _wait_for(case, version, method) if interactive else None
    return ("computed", row) if row is not None else ("queued", None)


def _existing(case: Case, version: ModelVersion, method: str) -> Explanation | None:
    return Explanation.objects.filter(case=case, model_version=version, method=method).first()


def _compute_here(case: Case, version: ModelVersion, method: str) -> Explanation:
    from workers.services.proposals import explanations_compute  # torch: only in this configuration

    explanations_compute(version_id=version.pk, case_ids=[case.pk], methods=[method])
    row = _existing(case, version, method)
    if row is None:  # the version stopped being active while we computed
        raise ConflictError("model_changed", "the active model changed; open the case again")
    return row


def _wait_for(case: Case, version: ModelVersion, method: str) -> Explanation | None:
    """The map once a worker stored it, polling the row (state lives in our rows, not in a result
    backend); None after HITL_EXPLAIN_WAIT_SECONDS: the reader's page then polls the case payload."""
    deadline = time.monotonic() + float(settings.HITL_EXPLAIN_WAIT_SECONDS)
    delay = 0.05
    while True:
        row = _existing(case, version, method)
        if row is not None or time.monotonic() >= deadline:
            return row
        time.sleep(delay)
        delay = min(delay * 2, 0.5)
