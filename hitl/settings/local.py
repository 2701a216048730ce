"""Embedded default for one machine: SQLite, local media, filesystem broker. Not for the internet."""

from .base import *  # noqa: F403
from .base import env

DEBUG = env.bool("DEBUG", default=True)
SECRET_KEY = env("SECRET_KEY", default="local-dev-only-insecure-key-do-not-use-in-production-7c1e9b")
