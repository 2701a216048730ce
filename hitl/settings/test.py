"""Unit tests: SQLite unless DATABASE_URL says otherwise, tasks run eagerly, fast hashing, temp media."""

import tempfile
from pathlib import Path

from .base import *  # noqa: F403
from .base import env

SECRET_KEY = "test-only-key-not-secret-0123456789-abcdefghijklmnopqrstuvwxyz"  # noqa: S105
DEBUG = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
MEDIA_ROOT = Path(env("MEDIA_ROOT", default=tempfile.mkdtemp(prefix="hitl-test-media-")))
STORAGES = {
    "default": {"BACKEND": "hitl.core.filesystem.AtomicFileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=True)
CELERY_TASK_EAGER_PROPAGATES = True
REST_FRAMEWORK = {**REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"login": "1000/min"}}  # noqa: F405
# The suite's shared worker runs batch work in its pool process itself (one clean-clone run once stopped taking tasks
# with children on; not seen again in two full integration runs with it on, cause unknown); the tests of the
# isolation turn it on for workers of their own.
HITL_BATCH_IN_CHILD = env.bool("HITL_BATCH_IN_CHILD", default=False)
STATIC_ROOT = Path(tempfile.mkdtemp(prefix="hitl-test-static-"))
