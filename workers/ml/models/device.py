"""Device choice and CPU discipline for the pure ML core."""

from __future__ import annotations

import os

import torch


def pick_device(prefer: str | None = None) -> torch.device:
    """`prefer` ('cpu', 'cuda', 'cuda:1') wins when available; else CUDA if present, else CPU."""
    wanted = prefer or os.environ.get("HITL_ML_DEVICE")
    if wanted:
        dev = torch.device(wanted)
        if dev.type == "cuda" and not torch.cuda.is_available():
            return torch.device("cpu")
        return dev
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def limit_cpu_threads(n: int | None = None) -> int:
    """Cap torch intra-op threads: worker concurrency x torch threads must stay <= cores."""
    n = n or int(os.environ.get("HITL_TORCH_THREADS", "1"))
    torch.set_num_threads(max(1, n))
    return torch.get_num_threads()
