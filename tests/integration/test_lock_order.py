"""Pool scoring and a reader's submission never deadlock on PostgreSQL. The 30-minute soak (issue 16) had one
503 in 1,519 submissions: the ranking held the active version FOR UPDATE and waited for a case row that a
submission held, and the submission's annotation insert needed a KEY SHARE lock on that version (its
proposal_model_version foreign key). Here the submission's transaction holds its case row first, the real
scoring then blocks on it, and only then does the submission insert its annotation and audit event."""

import threading

import pytest
from django.db import connection, connections, transaction

from annotations.models import Annotation, AnnotationKind, Case, Role
from hitl.core.audit import audit_record
from tests.factories import MembershipFactory, TrainingSettingsFactory, UserFactory
from tests.integration.conftest import wait_until
from tests.workers.test_training_helpers import make_version, seed_project
from workers.models import CaseScore, VersionState
from workers.services.scoring import scoring_run

pytestmark = pytest.mark.django_db(transaction=True)


def _waits_on_a_lock(pid: int) -> bool:
    with connection.cursor() as cur:
        cur.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", [pid])
        row = cur.fetchone()
    return bool(row) and row[0] == "Lock"


def test_a_submission_and_the_pool_ranking_never_deadlock():
    project = TrainingSettingsFactory(query_strategy="entropy").project
    ml, reader = UserFactory(), UserFactory()
    MembershipFactory(project=project, user=ml, role=Role.ML_ENGINEER)
    MembershipFactory(project=project, user=reader, role=Role.ANNOTATOR)
    pool = seed_project(project, ml, n_pool=4)["pool"]
    version = make_version(project, number=1, state=VersionState.ACTIVE)
    held = pool[0]
    scorer: dict = {}
    locked, done = threading.Event(), threading.Event()

    def score() -> None:
        try:
            with connections["default"].cursor() as cur:
                cur.execute("SELECT pg_backend_pid()")
                scorer["pid"] = cur.fetchone()[0]
            locked.wait(30)
            scorer["scored"] = scoring_run(project_id=project.pk, version_id=version.pk)
        except Exception as exc:  # a deadlock victim raises here (OperationalError)
            scorer["error"] = exc
        finally:
            connections["default"].close()
            done.set()

    thread = threading.Thread(target=score)
    thread.start()
    with transaction.atomic():
        Case.objects.select_for_update(no_key=True).get(pk=held.pk)  # what a submission holds first
        locked.set()
        wait_until(lambda: "pid" in scorer and _waits_on_a_lock(scorer["pid"]), timeout=60)
        # The ranking now waits for this case row; the submission goes on with its inserts.
        Annotation.objects.create(
            case=held,
            revision=1,
            kind=AnnotationKind.READER,
            author=reader,
            mask_path="x.png",
            mask_sha256="0" * 64,
            proposal_model_version=version,
        )
        audit_record(actor=reader, action="annotation.submit", project=project, target=held)
    thread.join(120)
    assert done.is_set() and "error" not in scorer, scorer.get("error")
    assert scorer["scored"] == len(pool)
    assert CaseScore.objects.filter(model_version=version).count() == len(pool)
    assert Annotation.objects.filter(case=held, proposal_model_version=version).count() == 1
