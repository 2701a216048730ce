"""Transactional outbox: follow-up work is written in the same transaction as the change that needs it,
then sent after commit. If the broker is down the row stays unsent and the periodic sweep sends it later, so
no submission's follow-up work is lost."""

import logging
from importlib import import_module

from celery import current_app as app
from django.db import transaction
from django.utils import timezone

from hitl.core.models import OutboxMessage

log = logging.getLogger(__name__)


def outbox_enqueue(*, task: str, kwargs: dict, queue: str = "") -> OutboxMessage:
    """Call inside the caller's transaction; the message is sent once that commits (from the row in memory:
    no second read). `queue` sends it to that queue instead of the task's route: work a reader waits for
    goes to the interactive lane (hitl.core.lanes.INTERACTIVE) whatever its task's usual lane."""
    message = OutboxMessage.objects.create(task=task, kwargs=kwargs, queue=queue)
    transaction.on_commit(lambda: _send(message))
    return message


def outbox_send(*, message_id: int) -> bool:
    """Send one message; True when the broker took it. Safe to call twice: a sent message is skipped."""
    message = OutboxMessage.objects.filter(pk=message_id, sent_at=None).first()
    return _send(message) if message is not None else False


def _send(message: OutboxMessage) -> bool:
    message_id = message.pk
    try:
        if app.conf.task_always_eager:  # tests: run the task object in-process
            import_module(message.task.rpartition(".")[0])  # registers it (the name is its module path)
            app.tasks[message.task].apply_async(kwargs=message.kwargs)
        else:  # by name: routed by CELERY_TASK_ROUTES (or its lane), and the web process never imports torch
            options = {"queue": message.queue} if message.queue else {}
            app.send_task(message.task, kwargs=message.kwargs, **options)
    except Exception as exc:  # broker down: keep it for the sweep
        OutboxMessage.objects.filter(pk=message_id).update(
            attempts=message.attempts + 1, last_error=type(exc).__name__
        )
        log.warning("outbox message %s not sent (%s); the sweep will retry", message_id, type(exc).__name__)
        return False
    OutboxMessage.objects.filter(pk=message_id, sent_at=None).update(
        sent_at=timezone.now(), attempts=message.attempts + 1
    )
    return True


def outbox_sweep(*, limit: int = 500) -> int:
    """Send what is still unsent (oldest first); returns how many went out."""
    ids = list(OutboxMessage.objects.filter(sent_at=None).order_by("id").values_list("pk", flat=True)[:limit])
    return sum(outbox_send(message_id=pk) for pk in ids)
