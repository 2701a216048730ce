"""Hand the memory a task freed back to the operating system. A training run or a pool scoring allocates
and frees hundreds of MB of tensors and arrays; glibc keeps much of that freed heap mapped, so a worker
process that has run several of them looks like it is leaking (measured in the soak: the batch lane's
resident memory rose 25-45 MB after each training run, +20 % in 30 minutes). `malloc_trim(0)` after each
task returns the free pages; it is a no-op where glibc is not the allocator."""

import ctypes
import ctypes.util
import logging
from functools import cache

from celery.signals import task_postrun

log = logging.getLogger(__name__)


@cache
def _malloc_trim():
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        return None


def trim() -> bool:
    """Return freed heap pages to the OS; True when glibc did it."""
    fn = _malloc_trim()
    return bool(fn(0)) if fn is not None else False


@task_postrun.connect(weak=False)
def trim_after_task(**_kwargs) -> None:
    trim()
