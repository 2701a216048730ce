"""workers.isolation: work in a forked child gives its memory back, reports how it ended, dies with its parent
and never outlives an interrupted wait."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from celery.exceptions import SoftTimeLimitExceeded

from tests.helpers import process_alive, wait_for
from workers.isolation import describe_exit, run_in_child


def _rss_bytes(pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _allocate(out: str, mb: int) -> None:
    block = np.ones(mb * 2**20, dtype=np.uint8)  # touched: resident, not just reserved
    Path(out).write_text(f"{int(block.sum())} {_rss_bytes()}")


def _raise() -> None:
    raise RuntimeError("boom")


def _kill_self(sig: int) -> None:
    os.kill(os.getpid(), sig)


def _sleep_with_pid(out: str) -> None:
    Path(out).write_text(str(os.getpid()))
    time.sleep(120)


def test_the_childs_memory_is_not_the_parents(tmp_path):
    out = tmp_path / "child.txt"
    before = _rss_bytes()
    assert run_in_child(_allocate, out=str(out), mb=300) == 0
    total, child_rss = (int(v) for v in out.read_text().split())
    assert total == 300 * 2**20 and child_rss > 300 * 2**20  # the child really held it
    assert _rss_bytes() - before < 50 * 2**20  # and the parent never did


@pytest.mark.parametrize(
    ("fn", "kwargs", "code", "text"),
    [
        (_raise, {}, 1, "exit code 1"),
        (_kill_self, {"sig": int(signal.SIGKILL)}, -9, "signal SIGKILL"),
        (_kill_self, {"sig": int(signal.SIGSEGV)}, -11, "signal SIGSEGV"),
    ],
)
def test_how_the_child_ended_is_reported(fn, kwargs, code, text):
    got = run_in_child(fn, **kwargs)
    assert got == code and describe_exit(got) == text


def test_an_interrupted_wait_kills_the_child_before_the_exception_leaves(tmp_path):
    out = tmp_path / "pid"

    def interrupt(*_):
        raise SoftTimeLimitExceeded()  # what Celery raises in the waiting task

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, 1.0)
    try:
        with pytest.raises(SoftTimeLimitExceeded):
            run_in_child(_sleep_with_pid, out=str(out))
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert not process_alive(int(out.read_text()))


def test_the_child_dies_with_its_parent(tmp_path):
    """kill -9 of a worker must not leave its training child running on (writing to the database)."""
    out = tmp_path / "pid"
    script = textwrap.dedent(
        f"""
        import django, os
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hitl.settings.test")
        django.setup()
        from tests.workers.test_isolation import _sleep_with_pid
        from workers.isolation import run_in_child
        run_in_child(_sleep_with_pid, out={str(out)!r})
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=Path(__file__).resolve().parents[2])
    try:
        assert wait_for(lambda: out.exists() and out.read_text().strip() != "")
        child = int(out.read_text())
        assert process_alive(child)
        parent.kill()
        parent.wait()
        assert wait_for(lambda: not process_alive(child))
    finally:
        parent.kill()


class _Task:
    """What task_body_run reads of a bound Celery task: its request and retry."""

    def __init__(self, **request):
        from celery.app.task import Context

        self.request = Context(**request)
        self.retries: list[dict] = []

    def retry(self, **kwargs):
        self.retries.append(kwargs)
        return RuntimeError("retry")


def _write_pid(out: str) -> int:
    Path(out).write_text(str(os.getpid()))
    return 7


def _delivered(queue: str, **extra) -> dict:
    """A worker's request for a message from `queue` (Celery's tracer sets called_directly=False)."""
    return {"id": "t1", "called_directly": False, "delivery_info": {"routing_key": queue}, **extra}


BATCH = _delivered("score")


@pytest.mark.parametrize(
    ("on", "request_fields", "isolated"),
    [
        (True, BATCH, True),
        (True, _delivered("explain"), True),
        (True, _delivered("train"), True),
        (True, _delivered("interactive"), False),  # a reader waits
        (True, _delivered("default"), False),
        (True, _delivered("score", is_eager=True), False),  # eager: runs in the caller
        (True, {}, False),  # called directly, not delivered
        (False, BATCH, False),  # the setting is off
    ],
)
def test_which_deliveries_run_in_a_child(settings, on, request_fields, isolated):
    from workers.isolation import isolates

    settings.HITL_BATCH_IN_CHILD = on
    assert isolates(_Task(**request_fields)) is isolated


def test_a_batch_body_runs_in_a_child_and_a_failed_child_is_retried_once(settings, tmp_path):
    from workers.isolation import task_body_run

    settings.HITL_BATCH_IN_CHILD = True
    out = tmp_path / "pid"
    task = _Task(**BATCH)
    assert task_body_run(task, _write_pid, out=str(out)) is None  # a child returns nothing to its parent
    assert int(out.read_text()) != os.getpid() and task.retries == []
    with pytest.raises(RuntimeError, match="retry"):
        task_body_run(task, _raise)
    assert task.retries == [{"countdown": 5, "max_retries": 1}]


def test_an_interactive_body_runs_here_and_returns_its_result(settings, tmp_path):
    from workers.isolation import task_body_run

    settings.HITL_BATCH_IN_CHILD = True
    out = tmp_path / "pid"
    task = _Task(**_delivered("interactive"))
    assert task_body_run(task, _write_pid, out=str(out)) == 7
    assert int(out.read_text()) == os.getpid()
