"""A reader asks for an explanation the pipeline has not made for this case yet.

Cost policy (workers.ml.explanations.is_interactive): an interactive method (one forward and at most one
backward pass) is computed now, in the request, and stored like the pipeline's maps; an expensive one is
queued on the `explain` queue (through the outbox) and appears in the case payload when done. Either way the
result is cached: one row per (case, model version, method), so asking again costs nothing.
"""

import logging
from typing import Literal

from django.db import transaction

from annotations.models import Case
from hitl.core import task_names
from hitl.core.audit import audit_record
from hitl.core.errors import ConflictError
from hitl.core.outbox import outbox_enqueue
from workers.ml.explain_policy import is_interactive, methods_for_arch
from workers.models import Explanation
from workers.services.proposals import explanations_compute
from workers.services.registry import active_version

log = logging.getLogger(__name__)

EXPLAIN_TASK = task_names.EXPLANATION_COMPUTE

Outcome = Literal["ready", "computed", "queued"]
OUTCOMES: tuple[Outcome, ...] = ("ready", "computed", "queued")


def explanation_request(*, case: Case, method: str, user) -> tuple[Outcome, Explanation | None]:
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
    existing = Explanation.objects.filter(case=case, model_version=version, method=method).first()
    if existing is not None:
        return "ready", existing
    if is_interactive(method):
        explanations_compute(version_id=version.pk, case_ids=[case.pk], methods=[method])
        row = Explanation.objects.filter(case=case, model_version=version, method=method).first()
        if row is None:  # the version stopped being active while we computed
            raise ConflictError("model_changed", "the active model changed; open the case again")
        return "computed", row
    with transaction.atomic():
        outbox_enqueue(
            task=EXPLAIN_TASK, kwargs={"version_id": version.pk, "case_ids": [case.pk], "methods": [method]}
        )
        audit_record(
            actor=user,
            project=case.project,
            action="explanation.request",
            target=case,
            details={"method": method, "model_version": version.number},
        )
    return "queued", None
