import numpy as np
import pytest

from workers.ml.models.fingerprint import fingerprint, plan


def test_fingerprint_known_answers():
    masks = [np.zeros((4, 4), np.uint8), np.pad(np.ones((2, 2), np.uint8), 1)]
    fp = fingerprint([(1, 197, 233), (1, 181, 217), (1, 200, 240)], masks)
    assert fp.images == 3 and fp.median_size == (197, 233) and fp.max_size == (200, 240)
    assert fp.labelled_pixel_share == pytest.approx((0 + 4 / 16) / 2) and fp.labelled_image_share == 0.5
    with pytest.raises(ValueError):
        fingerprint([])


@pytest.mark.parametrize(
    ("size", "patch", "batch", "levels"),
    [
        ((233, 197), 192, 4, 5),  # MNI152 axial: most of the slice in one patch, a deeper network
        ((160, 150), 160, 5, 5),  # 160 px: the whole slice, 5 levels
        ((122, 101), 128, 8, 4),  # the CT example at 3 mm
        ((40, 30), 64, 16, 4),  # small images: at least 64 (padded), batch capped
        ((1024, 1024), 192, 4, 5),  # large slides and radiographs: patches of 192, at least 4 per step
    ],
)
def test_the_plan_covers_the_slice_up_to_192_and_keeps_pixels_per_step(size, patch, batch, levels):
    p = plan(fingerprint([size]))
    assert p["patch_size"] == patch and p["batch_size"] == batch and len(p["channels"]) == levels
    assert p["patch_size"] % 32 == 0
