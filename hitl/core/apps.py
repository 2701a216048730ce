from django.apps import AppConfig


class CoreConfig(AppConfig):
    """Shared infrastructure of every app: outbox, storage, audit, permissions, DomainError, task names."""

    name = "hitl.core"
    label = "core"
    verbose_name = "Core infrastructure"
