"""The sandboxed parse: results come back through files, limits hold, a dying child becomes a clear error."""

import io
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from workers.ml.imaging import Limits
from workers.ml.imaging.sandbox import SandboxError, SandboxJob, SandboxLimits, run_sandboxed

SALT = "ab" * 16


def _job(tmp_path: Path, data: bytes, mask: bytes | None = None, **limits) -> SandboxJob:
    upload = tmp_path / "upload"
    upload.write_bytes(data)
    mask_path = None
    if mask is not None:
        mask_path = tmp_path / "mask"
        mask_path.write_bytes(mask)
    return SandboxJob(
        upload=str(upload),
        out_dir=str(tmp_path / "out"),
        salt_hex=SALT,
        date_shift_days=-7,
        limits=Limits(**limits),
        mask=str(mask_path) if mask_path else None,
        allowed_labels=[1, 2],
    )


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def test_a_good_png_and_its_mask_come_back_as_files(tmp_path):
    pixels = np.arange(24 * 20, dtype=np.uint8).reshape(24, 20)
    labels = np.zeros((24, 20), np.uint8)
    labels[3:9, 4:12] = 2
    outcome = run_sandboxed(_job(tmp_path, _png(pixels), _png(labels)), SandboxLimits(memory_bytes=1 << 30))
    (image,) = outcome.images
    out = tmp_path / "out"
    np.testing.assert_array_equal(np.load(out / image["pixels"]), pixels[np.newaxis])
    np.testing.assert_array_equal(np.load(out / image["mask"]), labels[np.newaxis])
    assert image["shape"] == [1, 24, 20] and image["source_kind"] == "png" and image["dicom_files"] == []
    assert 0 < outcome.peak_rss_bytes <= 1 << 30


def test_a_bad_file_is_the_childs_own_error_with_its_cost(tmp_path):
    with pytest.raises(SandboxError) as err:
        run_sandboxed(_job(tmp_path, b"not an image at all" * 100), SandboxLimits())
    assert err.value.code == "not_an_image" and err.value.peak_rss_bytes > 0


def test_the_memory_limit_holds_and_ends_in_a_clear_refusal(tmp_path):
    """A 64 M-voxel float32 volume (256 MB) cannot be decoded in a 400 MB address space."""
    vol = np.zeros((512, 512, 256), np.float32)
    data = nib.Nifti1Image(vol, np.eye(4)).to_bytes()
    limit = 400 << 20
    with pytest.raises(SandboxError) as err:
        run_sandboxed(_job(tmp_path, data), SandboxLimits(memory_bytes=limit))
    assert err.value.code == "too_large"
    assert err.value.peak_rss_bytes <= limit


def test_the_wall_clock_limit_kills_the_child(tmp_path):
    vol = np.random.default_rng(0).normal(size=(256, 256, 64)).astype(np.float32)
    data = nib.Nifti1Image(vol, np.eye(4)).to_bytes()
    with pytest.raises(SandboxError) as err:
        run_sandboxed(_job(tmp_path, data), SandboxLimits(wall_seconds=0.05))
    assert err.value.code == "ingest_timeout"
    assert not (tmp_path / "out" / "result.json").exists()
