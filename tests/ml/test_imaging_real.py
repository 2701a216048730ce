"""Real CT DICOM series (TotalSegmentator's 20 Siemens slices) against its NIfTI segmentation.

Needs the fetched sample data (scripts/fetch_sample_data.py); skipped when it is absent.
"""

from __future__ import annotations

import io
import os
import zipfile

import numpy as np
import pydicom
import pytest

from workers.ml.imaging import DeidContext, Limits, parse_mask, parse_upload
from workers.ml.imaging.datasets import data_dir
from workers.ml.models.device import limit_cpu_threads

limit_cpu_threads(1)

ROOT = data_dir() / "totalsegmentator" / "tests" / "reference_files"
# Outside CI the test skips without the data; with CI=true a missing fetch is a failure, not a skip.
pytestmark = pytest.mark.skipif(
    not (ROOT / "example_ct_dicom").is_dir() and os.environ.get("CI", "").lower() != "true",
    reason="sample data not fetched (python scripts/fetch_sample_data.py)",
)
CTX = DeidContext(salt=b"real-data-test-salt-0123456789ab", date_shift_days=-7)


def test_real_series_volume_aligns_with_its_segmentation() -> None:
    files = sorted((ROOT / "example_ct_dicom").iterdir())
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in reversed(files):  # reversed upload order: sorting must use positions
            zf.write(path, f"ct/{path.name}")
    (image,) = parse_upload(buf.getvalue(), "ct.zip", ctx=CTX, limits=Limits())
    assert image.pixels.shape == (len(files), 512, 512) and image.modality == "CT"
    assert image.uids is not None and image.uids.series and image.uids.study  # blank in source: filled
    seg_bytes = (ROOT / "example_seg_dicom.nii.gz").read_bytes()
    (seg_image,) = parse_upload(seg_bytes, "seg.nii.gz", ctx=CTX, limits=Limits())
    np.testing.assert_allclose(image.affine, seg_image.affine, atol=1e-3)  # same world grid
    mask = parse_mask(
        seg_bytes,
        "seg.nii.gz",
        expected_shape=image.pixels.shape,
        allowed_labels=set(range(1, 118)),
        limits=Limits(),
    )
    liver_hu = float(image.pixels[mask == 5].mean())  # TotalSegmentator "total" id 5 = liver
    assert 40.0 < liver_hu < 200.0, liver_hu  # soft tissue: aligned; a misaligned mask lands in air/fat
    originals = [pydicom.dcmread(p) for p in files]
    data = b"".join(image.dicom_files)
    for ds in originals[:3]:
        assert str(ds.file_meta.MediaStorageSOPInstanceUID).encode() not in data
        assert str(ds.FrameOfReferenceUID).encode() not in data
        assert str(ds.StudyDate).encode() not in data
