"""Real-data loaders (fetched by scripts/fetch_sample_data.py) and the 2D slicer.

The fetched-data tests skip with a clear message when var/data is missing on a developer machine, and
FAIL when CI is set: CI must run the fetch step first.
"""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np
import pytest

from workers.ml.imaging import datasets
from workers.ml.imaging.datasets import (
    AAL_DEEP_GREY,
    LabelledVolume,
    colin27_deep_grey,
    data_dir,
    slices,
    stardist_nuclei,
    totalseg_ct,
)

MRICRON = ("mricron", "usr", "share", "mricron", "templates")
TOTALSEG = ("totalsegmentator", "tests", "reference_files")


def _need(*parts: str) -> None:
    path = data_dir().joinpath(*parts)
    if path.exists():
        return
    message = f"{path} missing: run `python scripts/fetch_sample_data.py`"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI is set and sample data is missing: {message}")
    pytest.skip(message)


def _raw(*parts: str) -> np.ndarray:
    return np.asarray(nib.as_closest_canonical(nib.load(str(data_dir().joinpath(*parts)))).dataobj)


def test_colin27_deep_grey_matches_the_aal_tracing():
    _need(*MRICRON, "ch2.nii.gz")
    vol = colin27_deep_grey()
    assert vol.image.shape == vol.labels.shape == (181, 217, 181)
    assert vol.image.dtype == np.float32 and vol.labels.dtype == np.uint8
    assert vol.spacing == (1.0, 1.0, 1.0) and vol.modality == "MR"
    assert vol.label_names == {1: "deep grey"}
    aal = _raw(*MRICRON, "aal.nii.gz")
    ids = [i for pair in AAL_DEEP_GREY.values() for i in pair]
    assert np.array_equal(vol.labels == 1, np.isin(aal, ids))
    assert set(np.unique(vol.labels).tolist()) == {0, 1}
    # deep grey sits inside the brain: the T1 is brighter than background there
    assert vol.image[vol.labels == 1].mean() > 3 * vol.image[vol.image > 0].min()


def test_colin27_per_structure_has_six_bilateral_classes():
    _need(*MRICRON, "aal.nii.gz")
    vol = colin27_deep_grey(per_structure=True)
    aal = _raw(*MRICRON, "aal.nii.gz")
    assert vol.label_names == dict(enumerate(AAL_DEEP_GREY, start=1))
    for cls, (left, right) in enumerate(AAL_DEEP_GREY.values(), start=1):
        assert np.array_equal(vol.labels == cls, (aal == left) | (aal == right)), cls
        assert (vol.labels == cls).sum() > 500  # each structure is several cm^3 at 1 mm


def test_totalseg_ct_organs_follow_the_total_class_map():
    _need(*TOTALSEG, "example_ct_sm.nii.gz")
    vol = totalseg_ct()
    assert vol.image.shape == vol.labels.shape == (122, 101, 30)
    assert vol.spacing == (3.0, 3.0, 3.0) and vol.modality == "CT"
    assert vol.label_names == {1: "liver", 2: "spleen", 3: "kidney"}
    seg = _raw(*TOTALSEG, "example_seg.nii.gz")
    assert np.array_equal(vol.labels == 1, seg == 5)
    assert np.array_equal(vol.labels == 2, seg == 1)
    assert np.array_equal(vol.labels == 3, (seg == 2) | (seg == 3))
    # the class map in the sdist agrees with the ids we use
    text = data_dir().joinpath("totalsegmentator", "totalsegmentator", "map_to_binary.py").read_text()
    total = text[text.index('"total": {') :]
    for line in ('1: "spleen"', '2: "kidney_right"', '3: "kidney_left"', '5: "liver"'):
        assert line in total[: total.index("}")]
    # soft tissue in Hounsfield units: the liver's mean is between water (0) and bone (> 300)
    assert 0 < vol.image[vol.labels == 1].mean() < 300
    counts = np.bincount(vol.labels.ravel(), minlength=4)
    assert counts[1] > counts[2] > 0 and counts[3] > 0  # the liver is the largest of the three


def test_stardist_nuclei_is_a_binary_mask_of_125_nuclei():
    _need("stardist", "img2d.tif")
    item = stardist_nuclei()
    assert item.image.shape == item.labels.shape == (512, 512)
    assert item.image.dtype == np.float32
    assert set(np.unique(item.labels).tolist()) == {0, 1}
    assert item.instances is not None and len(np.unique(item.instances)) - 1 == 125
    assert np.array_equal(item.labels == 1, item.instances > 0)
    assert item.image[item.labels == 1].mean() > item.image[item.labels == 0].mean()  # nuclei fluoresce


def test_real_slices_have_fixed_size_and_keep_class_ids():
    _need(*TOTALSEG, "example_ct_sm.nii.gz")
    vol = totalseg_ct()
    out = slices(vol, size=48, step=2)
    assert {s.axis for s in out} == {"axial", "coronal", "sagittal"}
    for s in out:
        assert s.image.shape == s.mask.shape == (48, 48)
        assert s.image.dtype == np.float32 and s.mask.dtype == np.uint8
        assert set(np.unique(s.mask).tolist()) <= {0, 1, 2, 3}
        assert s.index % 2 == 0 and 0 <= s.position < 1
    fg_only = slices(vol, axes=("axial",), size=48, min_foreground=0.05)
    assert fg_only and all((s.mask > 0).mean() >= 0.05 for s in fg_only)


def _cube_volume() -> LabelledVolume:
    """40x40x10 voxels of 1x1x4 mm (40 mm cube); label 2 fills x 10-29, y 10-29, z 3-6 (a 20x20x16 mm box)."""
    image = np.zeros((40, 40, 10), np.float32)
    image[5:35, 5:35, 1:9] = 100.0  # body; the rest is air at the minimum
    labels = np.zeros_like(image, dtype=np.uint8)
    labels[10:30, 10:30, 3:7] = 2
    return LabelledVolume("cube", image, labels, (1.0, 1.0, 4.0), np.eye(4), {2: "box"}, "CT")


def test_slices_resample_by_physical_size():
    vol = _cube_volume()
    axial = slices(vol, axes=("axial",), size=20)
    # z = 0 and 9 are air only (dropped); 1..8 remain
    assert [s.index for s in axial] == list(range(1, 9))
    mid = next(s for s in axial if s.index == 4)
    # 40 mm field in 20 px = 2 mm/px: the 20 mm box spans 10x10 px = a quarter of the 400 px
    assert (mid.mask == 2).sum() == 100
    coronal = slices(vol, axes=("coronal",), size=20)
    c = next(s for s in coronal if s.index == 20)
    # rows = z (10 x 4 mm = 40 mm), cols = x (40 mm): box 16 mm x 20 mm -> 8 x 10 px at 2 mm/px
    assert (c.mask == 2).sum() == 80
    assert set(np.unique(c.mask).tolist()) == {0, 2}


def test_missing_data_raises_a_helpful_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HITL_DATA_DIR", str(tmp_path))
    assert data_dir() == tmp_path.resolve()
    for loader in (colin27_deep_grey, totalseg_ct, stardist_nuclei):
        with pytest.raises(FileNotFoundError, match="fetch_sample_data.py"):
            loader()


def test_slices_reject_bad_arguments():
    with pytest.raises(ValueError):
        slices(_cube_volume(), step=0)
    with pytest.raises(ValueError, match="unknown axis"):
        slices(_cube_volume(), axes=("oblique",))
    assert datasets.SLICE_AXES == ("axial", "coronal", "sagittal")
