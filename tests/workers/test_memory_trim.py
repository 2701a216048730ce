"""The worker hands freed heap back to the OS after each task (workers.memory)."""

import ctypes.util
import subprocess
import sys
from pathlib import Path

import pytest
from celery.signals import task_postrun, task_prerun

from workers import memory

# Run in a fresh interpreter: in a process that has already run other tests (pytest-xdist's workers) the
# heap's state is not this test's, and the blocks may not land where the test needs them.
_TRIM_PROBE = """
import ctypes
from workers import memory

def rss_kb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))

libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
blocks, pins = [], []
for _ in range(4_000):
    block = libc.malloc(64_000)
    ctypes.memset(block, 1, 64_000)  # touched: resident
    blocks.append(block)
    pins.append(libc.malloc(64))
for block in blocks:
    libc.free(block)
kept = rss_kb()
trimmed = memory.trim()
print(trimmed, (kept - rss_kb()) / 1024)
"""


@pytest.mark.skipif(ctypes.util.find_library("c") != "libc.so.6", reason="glibc only")
def test_trim_returns_freed_small_allocations_to_the_os():
    # 4,000 blocks of 64 kB (below glibc's mmap threshold: they live on the heap), each followed by a small
    # one that stays: freed, the blocks leave holes glibc keeps mapped (it gives back only the heap's top).
    # Allocated with glibc's own malloc: numpy or Python's allocator could place the small pins elsewhere
    # (pymalloc's arenas, numpy's cache), and then the freed blocks would merge into the top and go back
    # to the OS without any trim.
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", _TRIM_PROBE], cwd=root, capture_output=True, text=True, check=True
    )
    trimmed, returned_mb = out.stdout.split()
    assert trimmed == "True"
    assert float(returned_mb) > 100, returned_mb  # most of the 250 MB freed goes back


def test_the_trim_runs_after_long_tasks_only(monkeypatch):
    assert memory.trim_after_task in [receiver for _key, receiver in task_postrun.receivers]
    assert memory.task_started in [receiver for _key, receiver in task_prerun.receivers]
    trimmed: list[bool] = []
    monkeypatch.setattr(memory, "trim", lambda: trimmed.append(True) or True)
    clock = iter([100.0, 100.2, 200.0, 203.0])  # a 0.2 s task, then a 3 s one
    monkeypatch.setattr(memory, "_clock", lambda: next(clock))
    memory.task_started(task_id="short")
    memory.trim_after_task(task_id="short")
    assert trimmed == []
    memory.task_started(task_id="long")
    memory.trim_after_task(task_id="long")
    assert trimmed == [True] and memory._started == {}
