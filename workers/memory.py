"""Hand the memory a long task freed back to the operating system. A training run or a pool scoring
allocates and frees hundreds of MB of tensors and arrays, and glibc keeps much of the freed heap mapped;
`malloc_trim(0)` after each task that ran for at least LONG_TASK_S returns those pages (short tasks, such as
the outbox sweep every 15 s, skip it: they allocate little). A no-op where glibc is not the allocator. It does
not stop the batch lane's growth the soak measured after each training run (+20 % in 30 minutes, with or
without it: docs/results/README.md); that cause is still open."""

import ctypes
import ctypes.util
import time
from functools import cache

from celery.signals import task_postrun, task_prerun

LONG_TASK_S = 1.0
_clock = time.monotonic
_started: dict[str, float] = {}  # task id -> time.monotonic() at its start, in this worker process


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


@task_prerun.connect(weak=False)
def task_started(task_id: str = "", **_kwargs) -> None:
    _started[task_id] = _clock()


@task_postrun.connect(weak=False)
def trim_after_task(task_id: str = "", **_kwargs) -> None:
    started = _started.pop(task_id, None)
    if started is not None and _clock() - started >= LONG_TASK_S:
        trim()
