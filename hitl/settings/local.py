"""Embedded default for one machine: SQLite, local media, filesystem broker. Not for the internet."""

from .base import *  # noqa: F403
from .base import env

# Off unless asked for (HITL_DEBUG=1): a debug page shows request bodies (uploads carry PHI) and every URL.
DEBUG = env.bool("HITL_DEBUG", default=False)
SECRET_KEY = env("SECRET_KEY", default="local-dev-only-insecure-key-do-not-use-in-production-7c1e9b")
