"""Agreement in 3D (issue 19): two readers' labels of a volume's slices measured as volumes on the image's
own spacing; the figures equal an uncropped computation and MONAI's HD95; the block is the longest run of
slices both labelled; blind readers may not see it."""

import numpy as np
import pytest

from annotations.models import Role
from tests.annotations.test_volume import _affine, _give, _image
from tests.workers.test_training_helpers import annotate
from workers.ml.agreement.metrics import case_agreement
from workers.services.agreement_volume import longest_run, volume_agreement

SHAPE = (6, 40, 48)
COLUMNS = [(0, 0, 3.0), (0, -0.75, 0), (-0.5, 0, 0)]  # slice 3 mm, rows 0.75 mm, columns 0.5 mm


def _ellipsoid(centre, radii) -> np.ndarray:
    zz, yy, xx = np.ogrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    c, r = centre, radii
    return (((zz - c[0]) / r[0]) ** 2 + ((yy - c[1]) / r[1]) ** 2 + ((xx - c[2]) / r[2]) ** 2 <= 1).astype(
        np.uint8
    )


def test_longest_run_of_slices():
    assert longest_run({1, 2, 4}) == (1, 2) and longest_run({0, 3, 4, 5, 9}) == (3, 5)
    assert longest_run({7}) == (7, 7) and longest_run(set()) is None


def test_two_readers_agreement_in_3d_equals_an_uncropped_computation_and_monai(project, member, client_for):
    dm = member(Role.DATA_MANAGER)
    a, b = member(Role.ANNOTATOR), member(Role.ANNOTATOR)
    image = _image(project, dm, _affine(COLUMNS), np.zeros(SHAPE, np.int16))
    va, vb = _ellipsoid((2.5, 20, 24), (2, 9, 12)), _ellipsoid((2.5, 22, 25), (2, 8, 13))
    for reader, volume, slices in ((a, va, range(0, 5)), (b, vb, range(1, 6))):
        for k in slices:
            annotate(image.cases.get(slice_index=k), mask=volume[k], user=reader)
    result = volume_agreement(image=image)
    assert result["slices"] == [1, 4] and result["shared_slices"] == 4
    assert result["spacing_mm"] == pytest.approx([3.0, 0.75, 0.5])
    reference = case_agreement([va[1:5], vb[1:5]], (3.0, 0.75, 0.5))  # the whole planes, nothing cropped
    pair, ref = result["metrics"]["pairs"][0], reference.pairs[0]
    assert pair["dice"] == pytest.approx(ref.dice) and pair["hd95"] == pytest.approx(ref.hd95)
    assert pair["assd"] == pytest.approx(ref.assd) and 0.5 < pair["dice"] < 1.0

    import torch
    from monai.metrics import compute_hausdorff_distance

    onehot = [torch.from_numpy(np.stack([1 - v[1:5], v[1:5]])[None]).float() for v in (va, vb)]
    hd = compute_hausdorff_distance(onehot[0], onehot[1], percentile=95, spacing=[3.0, 0.75, 0.5])
    assert pair["hd95"] == pytest.approx(float(hd[0, 0]), rel=1e-6)  # an independent 3D HD95

    case = image.cases.get(slice_index=2)
    admin = member(Role.ADMIN)
    resp = client_for(admin).get(f"/api/v1/cases/{case.pk}/volume/agreement")
    assert resp.status_code == 200 and resp.json()["slices"] == [1, 4]
    assert all(r.startswith("reader-") for r in resp.json()["readers"])
    _give(case, a, slot=0)
    assert client_for(a).get(f"/api/v1/cases/{case.pk}/volume/agreement").status_code == 403  # reads blind


def test_no_agreement_until_two_readers_share_a_slice(project, member, client_for):
    dm, a, b = member(Role.DATA_MANAGER), member(Role.ANNOTATOR), member(Role.ANNOTATOR)
    image = _image(project, dm, _affine(COLUMNS), np.zeros(SHAPE, np.int16))
    annotate(image.cases.get(slice_index=1), mask=np.ones(SHAPE[1:], np.uint8), user=a)
    annotate(image.cases.get(slice_index=2), mask=np.ones(SHAPE[1:], np.uint8), user=b)
    assert volume_agreement(image=image) is None
    url = f"/api/v1/cases/{image.cases.get(slice_index=1).pk}/volume/agreement"
    assert client_for(dm).get(url).status_code == 404
