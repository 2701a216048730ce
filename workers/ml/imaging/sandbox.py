"""Parse one upload in a child process under hard limits, so no file can take the caller down.

The parent (`run_sandboxed`) starts `python -m workers.ml.imaging.sandbox` with the limits on its command
line and the job (paths and the project's de-identification secrets) on stdin, never in argv. The child
caps its own address space (RLIMIT_AS), CPU time and file size before it reads the file, parses with
`parse_upload` / `parse_mask`, and writes what is to be stored into `out_dir`:

    result.json                 {"ok": true, "images": [...]} or {"ok": false, "code": ..., "message": ...}
    image-<i>/pixels.npy        the de-identified pixels of image i
    image-<i>/dicom-<k>.dcm     its de-identified DICOM files, in slice order (DICOM sources only)
    image-<i>/mask.npy          the reference mask (uint8, (S, H, W)), when one came with the upload

The parent kills the child at the wall-clock limit, samples its peak RSS (VmHWM), and turns a child
that died without a result (memory, time, a crashing decoder) into an IngestError. Pure: no Django.
Nothing the child prints reaches a log (stdout and stderr go to /dev/null: decoder messages may quote
PHI); its only output is `out_dir`.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from workers.ml.imaging.errors import IngestError, Limits

_RESULT = "result.json"
_POLL_S = 0.02


@dataclass(frozen=True)
class SandboxLimits:
    """memory_bytes: the child's address-space limit (RLIMIT_AS), its peak cannot exceed it.
    cpu_seconds / wall_seconds: CPU-time limit (RLIMIT_CPU) and the parent's kill deadline.
    output_bytes: the largest file the child may write (RLIMIT_FSIZE)."""

    memory_bytes: int = 4 << 30
    cpu_seconds: int = 600
    wall_seconds: float = 900.0
    output_bytes: int = 8 << 30


@dataclass(frozen=True)
class SandboxJob:
    """upload / mask: local paths of the files to parse. allowed_labels: the mask's allowed values."""

    upload: str
    out_dir: str
    salt_hex: str
    date_shift_days: int
    limits: Limits
    mask: str | None = None
    allowed_labels: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class SandboxOutcome:
    """images: one dict per parsed image (metadata + file names inside out_dir); peak_rss_bytes: the
    child's high-water resident set (VmHWM); exit_status: its raw wait status."""

    images: list[dict[str, Any]]
    peak_rss_bytes: int
    seconds: float
    exit_status: int


class SandboxError(IngestError):
    """The child's refusal (or death), with what the child cost: its peak RSS and seconds."""

    def __init__(self, code: str, message: str, *, peak_rss_bytes: int, seconds: float) -> None:
        super().__init__(code, message)
        self.peak_rss_bytes = peak_rss_bytes
        self.seconds = seconds


def run_sandboxed(job: SandboxJob, box: SandboxLimits) -> SandboxOutcome:
    """Parse `job.upload` in a limited child. Raises SandboxError (an IngestError) for a bad file (the
    child's own code) or a child that died: ingest_timeout (wall or CPU limit), too_large (out of
    memory), ingest_failed."""
    Path(job.out_dir).mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "workers.ml.imaging.sandbox", *_limit_args(box)],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=_child_env(),
        close_fds=True,
    )
    assert proc.stdin is not None
    try:
        proc.stdin.write(json.dumps(_job_json(job)).encode())
        proc.stdin.close()
    except BrokenPipeError:  # the child died at once (e.g. could not even start under the limit)
        pass
    status, peak = _wait(proc, started + box.wall_seconds)
    seconds = time.monotonic() - started
    result = _read_result(Path(job.out_dir) / _RESULT)
    peak = max(peak, int((result or {}).get("peak_rss_bytes") or 0))
    if result is None:
        code, message = _death(status, timed_out=seconds >= box.wall_seconds)
        raise SandboxError(code, message, peak_rss_bytes=peak, seconds=seconds)
    if not result.get("ok"):
        raise SandboxError(str(result["code"]), str(result["message"]), peak_rss_bytes=peak, seconds=seconds)
    return SandboxOutcome(result["images"], peak, seconds, status)


def _limit_args(box: SandboxLimits) -> list[str]:
    return [str(box.memory_bytes), str(box.cpu_seconds), str(box.output_bytes)]


def _child_env() -> dict[str, str]:
    """Only what the interpreter needs: no secrets from the parent's environment, one BLAS thread (each
    thread's buffers would count against the address-space limit)."""
    keep = ("PATH", "PYTHONPATH", "LANG", "LC_ALL", "TMPDIR", "VIRTUAL_ENV")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONHASHSEED="0")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_project_root(), env.get("PYTHONPATH", "")) if p)
    return env


def _project_root() -> str:
    return str(Path(__file__).resolve().parents[3])


def _job_json(job: SandboxJob) -> dict[str, Any]:
    data = asdict(job)
    data["limits"] = asdict(job.limits)
    return data


def _wait(proc: subprocess.Popen, deadline: float) -> tuple[int, int]:
    """(wait status, peak RSS in bytes), killing the child at `deadline`.

    The peak is the child's VmHWM, sampled while it runs: wait4's ru_maxrss would also count the
    parent's pages the child held between fork and exec."""
    peak = 0
    while True:
        peak = max(peak, _vm_hwm(proc.pid))
        pid, status = os.waitpid(proc.pid, os.WNOHANG)
        if pid == proc.pid:
            break
        if time.monotonic() >= deadline:
            proc.kill()
            _, status = os.waitpid(proc.pid, 0)
            break
        time.sleep(_POLL_S)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return status, peak


def _vm_hwm(pid: int) -> int:
    """The process's resident high-water mark in bytes (0 once it has exited)."""
    try:
        with open(f"/proc/{pid}/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def _read_result(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _death(status: int, *, timed_out: bool) -> tuple[str, str]:
    """(code, message) for a child that left no result."""
    sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0
    if timed_out or sig in (signal.SIGXCPU, signal.SIGKILL):
        return "ingest_timeout", "parsing the file took longer than the ingest time limit"
    if sig in (signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS):
        # A C decoder that cannot allocate under RLIMIT_AS aborts instead of raising MemoryError.
        return "too_large", "decoding the file needs more memory than the ingest limit allows"
    return "ingest_failed", "the file could not be parsed"


# ---------------------------------------------------------------------------------------------- child


def _warm_blas() -> None:
    """Let OpenBLAS allocate its work buffer before the address-space limit: under the limit its first
    call would otherwise fail to allocate and exit the process (status 1, no result) instead of letting a
    too-large decode end as MemoryError ("too_large")."""
    import numpy as np

    np.dot(np.ones((64, 64)), np.ones((64, 64)))


def _child(argv: list[str]) -> int:
    memory, cpu, output = (int(a) for a in argv)
    _warm_blas()
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
    resource.setrlimit(resource.RLIMIT_FSIZE, (output, output))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    spec = json.loads(sys.stdin.read())
    out = Path(spec["out_dir"])
    try:
        result: dict[str, Any] = {"ok": True, "images": _parse(spec, out)}
    except IngestError as err:
        result = {"ok": False, "code": err.code, "message": str(err)}
    except MemoryError:
        msg = "decoding the file needs more memory than the ingest limit allows"
        result = {"ok": False, "code": "too_large", "message": msg}
    except Exception:  # never the exception's text: it may quote values from the file
        result = {"ok": False, "code": "ingest_failed", "message": "the file could not be parsed"}
    result["peak_rss_bytes"] = _vm_hwm(os.getpid())  # the last sample the parent might miss
    tmp = out / (_RESULT + ".tmp")
    tmp.write_text(json.dumps(result))
    tmp.replace(out / _RESULT)  # atomic: the parent sees a whole result or none
    return 0


def _parse(spec: dict[str, Any], out: Path) -> list[dict[str, Any]]:
    import numpy as np

    from workers.ml.imaging.deid import DeidContext
    from workers.ml.imaging.ingest import parse_mask, parse_upload

    limits = Limits(**spec["limits"])
    ctx = DeidContext(salt=bytes.fromhex(spec["salt_hex"]), date_shift_days=int(spec["date_shift_days"]))
    parsed = parse_upload(Path(spec["upload"]).read_bytes(), ctx=ctx, limits=limits)
    mask = None
    if spec.get("mask"):
        if len(parsed) != 1:
            raise IngestError("mask_shape_mismatch", "a mask can only accompany an upload holding one image")
        mask = parse_mask(
            Path(spec["mask"]).read_bytes(),
            "mask",
            expected_shape=tuple(parsed[0].pixels.shape[:3]),
            allowed_labels=set(spec["allowed_labels"]) | {0},
            limits=limits,
        )
    images = []
    for index, item in enumerate(parsed):
        folder = out / f"image-{index}"
        folder.mkdir()
        np.save(folder / "pixels.npy", item.pixels, allow_pickle=False)
        dicom = []
        for k, blob in enumerate(item.dicom_files):
            (folder / f"dicom-{k:05d}.dcm").write_bytes(blob)
            dicom.append(f"image-{index}/dicom-{k:05d}.dcm")
        if mask is not None:
            np.save(folder / "mask.npy", mask, allow_pickle=False)
        images.append(_describe(item, index, dicom, has_mask=mask is not None))
    return images


def _describe(item: Any, index: int, dicom: list[str], *, has_mask: bool) -> dict[str, Any]:
    uids = item.uids
    return {
        "pixels": f"image-{index}/pixels.npy",
        "mask": f"image-{index}/mask.npy" if has_mask else None,
        "dicom_files": dicom,
        "shape": [int(n) for n in item.pixels.shape],
        "dtype": str(item.pixels.dtype),
        "spacing": [float(s) for s in item.spacing],
        "modality": item.modality,
        "source_kind": item.source_kind,
        "affine": item.affine,
        "window_presets": [[n, float(c), float(w)] for n, c, w in item.window_presets],
        "content_hash": item.content_hash,
        "uids": None
        if uids is None
        else {
            "study": uids.study,
            "series": uids.series,
            "frame_of_reference": uids.frame_of_reference,
            "sop_instances": list(uids.sop_instances),
        },
    }


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
