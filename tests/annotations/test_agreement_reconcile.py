"""A lost agreement update is sent again (workers.services.agreement_reconcile)."""

from datetime import timedelta

import numpy as np
from django.utils import timezone

from annotations.models import Agreement, Annotation
from hitl.core import task_names
from hitl.core.models import OutboxMessage
from tests.factories import UserFactory
from tests.workers.test_training_helpers import add_case, annotate
from workers.services.agreement import agreement_update
from workers.services.agreement_reconcile import agreements_missing, agreements_reconcile


def _case(project, readers: int):
    case = add_case(
        project, user=UserFactory(), image=np.zeros((16, 16), np.float32), mask=None, split="pool"
    )
    for i in range(readers):
        mask = np.zeros((16, 16), np.uint8)
        mask[4 : 10 + i, 4:10] = 1
        annotate(case, mask=mask, user=UserFactory())
    return case


def _age(case, seconds: float) -> None:
    Annotation.objects.filter(case=case).update(created_at=timezone.now() - timedelta(seconds=seconds))


def _sent() -> list[int]:
    return [m.kwargs["case_id"] for m in OutboxMessage.objects.filter(task=task_names.AGREEMENT_UPDATE)]


def test_only_multi_reader_cases_without_a_current_agreement_and_old_enough_are_sent_again(project):
    lost, single, recent, agreed, stale = (_case(project, n) for n in (2, 1, 2, 2, 3))
    for case in (lost, single, agreed, stale):
        _age(case, 600)
    assert agreement_update(case_id=agreed.pk) is not None  # computed after its revisions: current
    assert agreement_update(case_id=stale.pk) is not None
    annotate(stale, mask=np.ones((16, 16), np.uint8), user=UserFactory())  # a revision after it
    Annotation.objects.filter(case=stale).update(created_at=timezone.now() - timedelta(seconds=300))
    Agreement.objects.filter(case=stale).update(computed_at=timezone.now() - timedelta(seconds=400))

    before = len(_sent())
    assert sorted(agreements_reconcile(older_than_s=120)) == sorted([lost.pk, stale.pk])
    assert sorted(_sent()[before:]) == sorted([lost.pk, stale.pk])  # through the outbox
    assert agreements_missing(older_than=timedelta(seconds=900)) == []  # none is that old


def test_a_reconciled_case_is_computed_once_and_then_left_alone(project):
    case = _case(project, 2)
    _age(case, 600)
    assert agreements_reconcile(older_than_s=120) == [case.pk]
    agreement_update(case_id=case.pk)
    agreement_update(case_id=case.pk)  # the original message, delivered late
    assert Agreement.objects.filter(case=case).count() == 1
    assert agreements_reconcile(older_than_s=120) == []


def test_revisions_older_than_a_day_are_not_retried_for_ever(project):
    case = _case(project, 2)
    _age(case, 2 * 86400)
    assert agreements_reconcile(older_than_s=120) == []
