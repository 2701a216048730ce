"""Broker down: submissions still commit, their follow-up work waits in the outbox and the sweep sends it."""

import pytest
from kombu.exceptions import OperationalError

import workers.tasks  # noqa: F401  (registers the tasks)
from hitl.celery import app
from hitl.core.models import OutboxMessage
from hitl.core.outbox import outbox_enqueue, outbox_send, outbox_sweep


@pytest.fixture
def broker(monkeypatch):
    state = {"down": True, "sent": []}
    task = app.tasks["workers.tasks.system.ping"]

    def apply_async(kwargs=None, **_):
        if state["down"]:
            raise OperationalError("connection refused")
        state["sent"].append(kwargs)

    monkeypatch.setattr(task, "apply_async", apply_async)
    return state


@pytest.mark.django_db
def test_message_survives_a_broker_outage_and_is_swept_later(broker, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        message = outbox_enqueue(task="workers.tasks.system.ping", kwargs={"token": "t1"})
    message.refresh_from_db()
    assert message.sent_at is None and message.attempts == 1 and message.last_error == "OperationalError"
    broker["down"] = False
    assert outbox_sweep() == 1
    message.refresh_from_db()
    assert message.sent_at is not None and broker["sent"] == [{"token": "t1"}]
    assert outbox_sweep() == 0 and outbox_send(message_id=message.pk) is False  # never sent twice
    assert OutboxMessage.objects.count() == 1


@pytest.mark.django_db
def test_a_message_with_a_lane_is_sent_to_that_queue_and_others_by_their_route(
    monkeypatch, django_capture_on_commit_callbacks
):
    sent = []
    monkeypatch.setattr(app, "send_task", lambda name, kwargs=None, **options: sent.append((name, options)))
    eager = app.conf.task_always_eager
    app.conf.task_always_eager = False  # as in production: send by name
    try:
        with django_capture_on_commit_callbacks(execute=True):
            outbox_enqueue(task="workers.tasks.system.ping", kwargs={}, queue="interactive")
            outbox_enqueue(task="workers.tasks.system.ping", kwargs={})
    finally:
        app.conf.task_always_eager = eager
    assert sent == [
        ("workers.tasks.system.ping", {"queue": "interactive"}),
        ("workers.tasks.system.ping", {}),
    ]
    assert list(OutboxMessage.objects.values_list("queue", flat=True)) == ["interactive", ""]
    assert not OutboxMessage.objects.filter(sent_at=None).exists()
