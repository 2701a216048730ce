"""Celery tasks: thin; take ids, call a service. Registered by autodiscovery (workers.tasks)."""

from .imaging import image_analyse
from .system import ping

__all__ = ["image_analyse", "ping"]
