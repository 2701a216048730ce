"""Run one long piece of worker work in a forked child process, so that everything it allocates goes back to
the operating system when it ends.

Why: the 30-minute soak (docs/results/README.md, issue 16) measured the batch lane's resident set rising by
25-45 MB after every training run (+20 % in 30 minutes), with glibc's heap trimmed after each task: freed
tensors and arrays leave the heap fragmented, and a long-lived worker process keeps those pages. A child
that exits returns all of them, whatever the allocator does. Fork is cheap: the child shares the parent's
imported modules (torch included) copy-on-write, so it starts in milliseconds, not the seconds a fresh
interpreter would take.

Contract of `run_in_child(fn, **kwargs)`:
- `fn(**kwargs)` runs in a child made with os.fork (multiprocessing refuses to start one from a Celery pool
  process, which it takes for a daemon). The child runs the handlers Celery and kombu registered for a
  fork (billiard's registry: it opens its own broker connections, never the parent's) and gets the default
  handlers for the signals the pool process uses. The parent closes its database connections before the
  fork; each side opens its own after.
- The child dies with its parent (PR_SET_PDEATHSIG, Linux): a `kill -9` of the worker never leaves an
  orphan still writing to the database.
- Returns the child's exit code: 0 when `fn` returned, 1 when it raised (the traceback goes to the log),
  minus the signal number when a signal killed it (e.g. -9: out of memory, or killed by hand).
- An exception in the parent while it waits (Celery's soft time limit, a shutdown) kills the child before
  it propagates: the work never outlives the task that owns it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import Callable
from typing import Any

from billiard import util as billiard_util
from django.conf import settings
from django.db import connections

from hitl.core.lanes import LANES
from workers.ml.process import die_with_parent

log = logging.getLogger(__name__)

# Handlers a Celery pool process installs (shutdown, soft time limit): the child must not act on them.
_POOL_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGUSR1, signal.SIGHUP, signal.SIGALRM)


def run_in_child(fn: Callable[..., Any], /, **kwargs: Any) -> int:
    """Run fn(**kwargs) in a forked child and wait for it; see the module contract."""
    connections.close_all()  # a socket shared by two processes corrupts both sides' protocol
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # pragma: no cover  (the child: coverage does not follow it)
        code = 1
        try:
            code = _child_main(parent, fn, kwargs)
        finally:
            os._exit(code)  # never back into the parent's code (its task loop, its atexit handlers)
    try:
        _, status = os.waitpid(pid, 0)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):  # it may have ended in between
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise
    return os.waitstatus_to_exitcode(status)


def task_body_run(task: Any, fn: Callable[..., Any], /, **kwargs: Any) -> Any:
    """The body of a batch task: fn(**kwargs) in a child (see `isolates`), where a child that did not end
    cleanly (out of memory, a crash, an exception) is retried once, as a redelivery after a worker's death
    would be; otherwise fn(**kwargs) here, returning its result. Every caller's fn is idempotent."""
    if not isolates(task):
        return fn(**kwargs)
    if run_in_child(fn, **kwargs) != 0:
        raise task.retry(countdown=5, max_retries=1)
    return None


def isolates(task: Any) -> bool:
    """True when this delivery of `task` runs in a child: HITL_BATCH_IN_CHILD is on, a worker runs it (an
    eager or direct call runs in the caller) and it did not come through an interactive-lane queue (a reader waits
    for those; they are short and the interactive worker stays flat without it: docs/results)."""
    if not settings.HITL_BATCH_IN_CHILD or task.request.is_eager or task.request.called_directly:
        return False
    queue = (task.request.delivery_info or {}).get("routing_key")
    return queue not in LANES["interactive"]


def describe_exit(code: int) -> str:
    """'exit code 1' / 'signal SIGKILL' for a message a user reads."""
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


def _child_main(parent: int, fn: Callable[..., Any], kwargs: dict[str, Any]) -> int:
    code = 1
    try:
        _die_with_parent()
        if os.getppid() != parent:  # the parent died before the request above took effect
            return 1
        for sig in _POOL_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        billiard_util._run_after_forkers()  # what billiard runs in the pool processes it forks
        fn(**kwargs)
        code = 0
    except BaseException:
        log.exception("isolated work %s failed", getattr(fn, "__name__", fn))
    finally:
        try:
            connections.close_all()  # the child's own connections: end their sessions cleanly
        finally:
            logging.shutdown()  # flush the log handlers: os._exit skips it
    return code


def _die_with_parent() -> None:
    if not die_with_parent():
        log.warning("the isolated child cannot ask to die with its parent on this platform")
