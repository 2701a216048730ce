"""Process helpers with no Django: a child that dies with its parent."""

from __future__ import annotations

import ctypes
import ctypes.util
import signal

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> bool:
    """Ask the kernel to SIGKILL this process when the one that forked it dies (Linux only; the request
    survives an exec). False where it cannot be asked: elsewhere a child outlives a killed parent until its
    work ends. Call it in the child (after fork, or as a Popen preexec_fn)."""
    name = ctypes.util.find_library("c")
    try:
        prctl = ctypes.CDLL(name, use_errno=True).prctl if name else None
    except (OSError, AttributeError):
        return False
    return prctl is not None and prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
