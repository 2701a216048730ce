"""Agreement metrics: known answers derived by hand, conventions, STAPLE on real MNI152 masks, speed."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest
from scipy import ndimage

from workers.ml.agreement import metrics as ag
from workers.ml.models.device import limit_cpu_threads

limit_cpu_threads(1)


def square(shape: tuple[int, int], top: int, left: int, height: int, width: int) -> np.ndarray:
    m = np.zeros(shape, dtype=np.uint8)
    m[top : top + height, left : left + width] = 1
    return m


# ---------------------------------------------------------------- overlap


def test_dice_iou_of_two_10x10_squares_overlapping_7x6() -> None:
    a = square((30, 30), 5, 5, 10, 10)
    b = square((30, 30), 8, 9, 10, 10)  # shifted by (3, 4): overlap (10-3) x (10-4) = 42 pixels
    assert ag.dice(a, b) == pytest.approx(2 * 42 / 200)
    assert ag.iou(a, b) == pytest.approx(42 / (200 - 42))
    assert ag.dice(a, a) == 1.0 and ag.iou(a, a) == 1.0


def test_dice_per_label_on_label_maps() -> None:
    a = np.zeros((20, 20), dtype=np.uint8)
    b = np.zeros_like(a)
    a[0:10, 0:10], b[0:10, 0:5] = 1, 1  # label 1: 100 vs 50 pixels, 50 shared -> 100/150
    a[12:16, 12:16], b[12:16, 12:16] = 2, 2  # label 2: identical
    result = ag.dice_per_label(a, b, [1, 2, 3])
    assert result == pytest.approx({1: 2 * 50 / 150, 2: 1.0, 3: 1.0})


# ---------------------------------------------------------------- surface distances


def _concentric_expected(gr: int, gc: int, sr: float, sc: float, n_a: int, n_b: int) -> dict[str, float]:
    """Hand derivation for rectangle B inside rectangle A, inset by gr rows and gc columns, with
    gr*sr == gc*sc == g. Every surface voxel of B is exactly g from A's surface. A surface voxel of A
    facing B's side is g away too; the 4 * (gc + gr - 1) voxels in A's corners are nearest to B's
    corner voxel: top-row ones at (gr rows, j = 1..gc columns), side ones at (i = 1..gr-1 rows, gc cols).
    """
    g = gr * sr
    corner = [math.hypot(gr * sr, j * sc) for j in range(1, gc + 1)]
    corner += [math.hypot(i * sr, gc * sc) for i in range(1, gr)]
    n_corner = 4 * len(corner)
    total = n_b * g + (n_a - n_corner) * g + 4 * sum(corner)
    return {
        "g": g,
        "n_corner": n_corner,
        "assd": total / (n_a + n_b),
        "max": math.hypot(gr * sr, gc * sc),
        "sdice_at_g": (n_a - n_corner + n_b) / (n_a + n_b),
    }


@pytest.mark.parametrize(("spacing", "gr", "gc"), [((1.0, 1.0), 5, 5), ((0.5, 2.0), 8, 2)])
def test_concentric_rectangles_hd95_assd_surface_dice(spacing: tuple[float, float], gr: int, gc: int) -> None:
    shape, top, side = (240, 240), 20, 200
    a = square(shape, top, top, side, side)
    b = square(shape, top + gr, top + gc, side - 2 * gr, side - 2 * gc)
    n_a = 4 * (side - 1)
    n_b = 2 * ((side - 2 * gr) + (side - 2 * gc)) - 4
    exp = _concentric_expected(gr, gc, spacing[0], spacing[1], n_a, n_b)
    # fewer than 5% of A's surface voxels are corner voxels, so both 95th percentiles are exactly g
    assert exp["n_corner"] / n_a < 0.05
    d = ag.surface_distances(a, b, spacing)
    assert (d.a_to_b.size, d.b_to_a.size) == (n_a, n_b)
    assert d.a_to_b.max() == pytest.approx(exp["max"])
    assert ag.hausdorff95(a, b, spacing) == pytest.approx(exp["g"])
    assert ag.hausdorff95(b, a, spacing) == pytest.approx(exp["g"])
    assert ag.assd(a, b, spacing) == pytest.approx(exp["assd"])
    g = exp["g"]
    assert ag.surface_dice(a, b, spacing, tolerance_mm=g - 0.01) == 0.0
    assert ag.surface_dice(a, b, spacing, tolerance_mm=g) == pytest.approx(exp["sdice_at_g"])
    assert ag.surface_dice(a, b, spacing, tolerance_mm=exp["max"] + 0.01) == 1.0


def test_spacing_is_per_axis_not_swapped() -> None:
    a = square((40, 40), 10, 10, 1, 1)
    b = square((40, 40), 13, 14, 1, 1)  # 3 rows, 4 columns apart
    assert ag.hausdorff95(a, b) == pytest.approx(5.0)
    assert ag.hausdorff95(a, b, (0.5, 2.0)) == pytest.approx(math.hypot(1.5, 8.0))
    assert ag.assd(a, b, (2.0, 0.5)) == pytest.approx(math.hypot(6.0, 2.0))


def test_3d_single_voxels_with_anisotropic_spacing() -> None:
    a = np.zeros((10, 10, 10), dtype=np.uint8)
    b = np.zeros_like(a)
    a[1, 1, 1], b[3, 4, 7] = 1, 1  # offsets (2, 3, 6) voxels
    assert ag.hausdorff95(a, b) == pytest.approx(7.0)
    assert ag.assd(a, b, (2.0, 1.0, 0.5)) == pytest.approx(math.sqrt(16 + 9 + 9))
    assert ag.surface_dice(a, b, (2.0, 1.0, 0.5), tolerance_mm=5.0) == 0.0


def _ellipsoid(shape, centre, radii) -> np.ndarray:
    grid = np.ogrid[tuple(slice(0, n) for n in shape)]
    return (sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii, strict=True)) <= 1).astype(
        np.uint8
    )


@pytest.mark.parametrize("spacing", [(3.0, 0.8, 0.7), (1.0, 1.0, 1.0), (5.0, 0.5, 0.5)])
def test_3d_hd95_and_assd_equal_monais_on_a_synthetic_volume_pair(spacing) -> None:
    """Issue 19: the 3D surface distances (mm, anisotropic slice spacing) equal an independent computation,
    MONAI's compute_hausdorff_distance (95th percentile) and compute_average_surface_distance (symmetric)."""
    import torch
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance

    shape = (24, 48, 40)
    a = _ellipsoid(shape, (11, 22, 19), (6, 14, 11))
    b = _ellipsoid(shape, (13, 25, 18), (5, 12, 13)) | _ellipsoid(shape, (6, 10, 30), (2, 3, 3))  # + a blob
    onehot = [torch.from_numpy(np.stack([1 - m, m])[None]).float() for m in (a, b)]
    hd = compute_hausdorff_distance(onehot[0], onehot[1], percentile=95, spacing=list(spacing))
    asd = compute_average_surface_distance(onehot[0], onehot[1], symmetric=True, spacing=list(spacing))
    assert ag.hausdorff95(a, b, spacing) == pytest.approx(float(hd[0, 0]), rel=1e-6)
    assert ag.assd(a, b, spacing) == pytest.approx(float(asd[0, 0]), rel=1e-6)
    assert ag.hausdorff95(a, b, spacing) > 0


def test_empty_mask_conventions_are_finite_and_documented() -> None:
    empty = np.zeros((20, 30), dtype=np.uint8)
    full = square((20, 30), 5, 5, 4, 4)
    spacing = (0.5, 2.0)
    assert (ag.dice(empty, empty), ag.iou(empty, empty)) == (1.0, 1.0)
    assert ag.hausdorff95(empty, empty, spacing) == 0.0 and ag.assd(empty, empty, spacing) == 0.0
    assert ag.surface_dice(empty, empty, spacing, 1.0) == 1.0
    diagonal = math.hypot(20 * 0.5, 30 * 2.0)
    for x, y in ((empty, full), (full, empty)):
        assert (ag.dice(x, y), ag.iou(x, y), ag.surface_dice(x, y, spacing, 100.0)) == (0.0, 0.0, 0.0)
        assert ag.hausdorff95(x, y, spacing) == pytest.approx(diagonal)
        assert ag.assd(x, y, spacing) == pytest.approx(diagonal)


def test_invalid_inputs_raise() -> None:
    with pytest.raises(ValueError):
        ag.dice(np.zeros((4, 4)), np.zeros((4, 5)))
    with pytest.raises(ValueError):
        ag.hausdorff95(np.ones((4, 4)), np.ones((4, 4)), (1.0, 0.0))
    with pytest.raises(ValueError):
        ag.assd(np.ones((4, 4)), np.ones((4, 4)), (1.0,))


# ---------------------------------------------------------------- kappa


def test_cohens_kappa_textbook_2x2() -> None:
    # 50 subjects: both yes 20, A yes/B no 5, A no/B yes 10, both no 15 -> p_o 0.7, p_e 0.5, kappa 0.4
    a = np.array([1] * 20 + [1] * 5 + [0] * 10 + [0] * 15).reshape(5, 10)
    b = np.array([1] * 20 + [0] * 5 + [1] * 10 + [0] * 15).reshape(5, 10)
    table, labels = ag.contingency(a, b)
    assert labels == (0, 1)
    assert table.tolist() == [[15, 10], [5, 20]]
    assert ag.cohens_kappa(a, b) == pytest.approx(0.4)


def test_cohens_kappa_three_labels_hand_table() -> None:
    # p_o = 24/30; marginals rows (12, 10, 8), cols (11, 12, 7): p_e = 308/900 -> kappa = 412/592
    table = np.array([[10, 2, 0], [1, 8, 1], [0, 2, 6]])
    a = np.repeat(np.arange(3), table.sum(axis=1))
    b = np.concatenate([np.repeat(np.arange(3), row) for row in table])
    assert ag.cohens_kappa_table(table) == pytest.approx(103 / 148)
    assert ag.cohens_kappa(a.reshape(5, 6), b.reshape(5, 6)) == pytest.approx(103 / 148)


def test_kappa_degenerate_full_agreement_on_one_class_is_one() -> None:
    zeros = np.zeros((8, 8), dtype=np.uint8)
    assert ag.cohens_kappa(zeros, zeros) == 1.0
    assert ag.cohens_kappa(zeros + 2, zeros + 2) == 1.0
    assert ag.fleiss_kappa([zeros, zeros, zeros]) == 1.0


FLEISS_1971 = np.array(  # Fleiss (1971) worked example: 10 subjects, 14 raters, 5 categories
    [
        [0, 0, 0, 0, 14],
        [0, 2, 6, 4, 2],
        [0, 0, 3, 5, 6],
        [0, 3, 9, 2, 0],
        [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0],
        [3, 2, 6, 3, 0],
        [2, 5, 3, 2, 2],
        [6, 5, 2, 1, 0],
        [0, 2, 2, 3, 7],
    ]
)


def test_fleiss_kappa_worked_example_from_table_and_masks() -> None:
    assert ag.fleiss_kappa_counts(FLEISS_1971) == pytest.approx(0.210, abs=5e-4)
    # the same ratings as 14 readers' 2x5 label maps (subject = pixel, category j = label j)
    ratings = np.stack([np.repeat(np.arange(5), row) for row in FLEISS_1971], axis=1)  # (14, 10)
    masks = [r.reshape(2, 5) for r in ratings]
    assert ag.fleiss_kappa(masks) == pytest.approx(ag.fleiss_kappa_counts(FLEISS_1971))


def test_fleiss_kappa_small_hand_table() -> None:
    # pixels: all three say 1; all say 0; two say 1; one says 1 -> P_bar 2/3, P_e 1/2, kappa 1/3
    masks = [np.array([[1, 0, 1, 0]]), np.array([[1, 0, 1, 0]]), np.array([[1, 0, 0, 1]])]
    assert ag.fleiss_kappa(masks) == pytest.approx(1 / 3)


# ---------------------------------------------------------------- consensus


def test_majority_vote_with_ties_to_background() -> None:
    r1 = np.array([[1, 1, 0, 2]])
    r2 = np.array([[1, 0, 0, 2]])
    r3 = np.array([[0, 1, 1, 1]])
    assert ag.majority_vote([r1, r2, r3]).tolist() == [[1, 1, 0, 2]]
    assert ag.majority_vote([r1, r3]).tolist() == [[0, 1, 0, 0]]  # every disagreement is a tie


@pytest.fixture(scope="module")
def mni_slice() -> np.ndarray:
    from workers.ml.imaging.datasets import mni152_tissue

    return mni152_tissue().labels[:, :, 90].copy()  # axial, 197 x 233, 1 = GM, 2 = WM


def _readers(truth: np.ndarray, seed: int = 0) -> list[np.ndarray]:
    """Two careful readers (one draws 1 px wide, one 1 px tight) and one noisy reader (20% of pixels flipped; a 1 px
    erosion already loses ~14% of this convoluted WM mask, so "noisy" must be clearly worse than that)."""
    rng = np.random.default_rng(seed)
    wide = ndimage.binary_dilation(truth).astype(np.uint8)
    tight = ndimage.binary_erosion(truth).astype(np.uint8)
    noisy = np.where(rng.random(truth.shape) < 0.20, 1 - truth, truth).astype(np.uint8)
    return [wide, tight, noisy]


def test_staple_recovers_truth_and_flags_the_noisy_reader(mni_slice: np.ndarray) -> None:
    truth = (mni_slice == 2).astype(np.uint8)  # real white-matter mask
    readers = _readers(truth)
    result = ag.staple(readers)
    assert result.labels == (1,)
    assert ag.dice(result.consensus, truth) > ag.dice(readers[2], truth)
    assert ag.dice(result.consensus, truth) > 0.9
    assert np.argmin(result.sensitivity) == 2 and np.argmin(result.specificity) == 2
    assert 0.0 <= min(result.sensitivity) and max(result.specificity) <= 1.0


def test_staple_multilabel_per_label_then_highest_probability(mni_slice: np.ndarray) -> None:
    rng = np.random.default_rng(1)
    noisy = np.where(rng.random(mni_slice.shape) < 0.15, rng.integers(0, 3, mni_slice.shape), mni_slice)
    readers = [mni_slice, ndimage.grey_dilation(mni_slice, size=(2, 2)), noisy.astype(np.uint8)]
    result = ag.staple(readers)
    assert result.labels == (1, 2) and set(result.per_label_sensitivity) == {1, 2}
    for lab in (1, 2):
        assert ag.dice(result.consensus == lab, mni_slice == lab) > ag.dice(noisy == lab, mni_slice == lab)
    assert np.argmin(result.sensitivity) == 2


def test_staple_identical_or_empty_readers_are_perfect() -> None:
    m = square((16, 16), 4, 4, 6, 6)
    same = ag.staple([m, m, m])
    assert np.array_equal(same.consensus, m) and same.sensitivity == (1.0, 1.0, 1.0)
    empty = ag.staple([m * 0, m * 0])
    assert not empty.consensus.any() and empty.specificity == (1.0, 1.0)


# ---------------------------------------------------------------- per case


def _plain_json(value: object) -> bool:
    """True when `value` holds only JSON's own Python types (no numpy scalars or arrays)."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain_json(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain_json(v) for v in value)
    return value is None or type(value) in (bool, int, float, str)


def test_pairwise_and_case_agreement_known_values() -> None:
    a = square((30, 30), 5, 5, 10, 10)
    b = square((30, 30), 8, 9, 10, 10)
    pairs = ag.pairwise_agreement([a, a, b], (1.0, 1.0))
    assert [(p.reader_a, p.reader_b) for p in pairs] == [(0, 1), (0, 2), (1, 2)]
    assert pairs[0].dice == 1.0 and pairs[0].hd95 == 0.0 and pairs[0].surface_dice == 1.0
    assert pairs[1].dice == pytest.approx(0.42) and pairs[1].hd95 == pytest.approx(ag.hausdorff95(a, b))

    case = ag.case_agreement([a, a, b], (1.0, 1.0), model_mask=b, tolerance_mm=2.0)
    assert case.kappa_method == "fleiss" and case.n_readers == 3
    assert np.array_equal(case.consensus, a)  # two of three readers drew a
    assert [r.dice for r in case.readers_vs_consensus] == pytest.approx([1.0, 1.0, 0.42])
    assert case.model_vs_consensus is not None and case.model_vs_consensus.dice == pytest.approx(0.42)
    assert case.model_within_reader_range is True
    d = case.to_dict()
    assert _plain_json(d) and "consensus" not in d
    assert json.loads(json.dumps(d))["pairs"][1]["dice"] == pytest.approx(0.42)

    two = ag.case_agreement([a, b])
    assert two.kappa_method == "cohen" and two.kappa == pytest.approx(ag.cohens_kappa(a, b))
    assert two.model_vs_consensus is None and two.model_within_reader_range is None


def test_case_agreement_model_outside_range_and_empty_readers() -> None:
    a = square((30, 30), 5, 5, 10, 10)
    case = ag.case_agreement([a, a], model_mask=np.zeros_like(a))
    assert case.model_vs_consensus is not None and case.model_vs_consensus.dice == 0.0
    assert case.model_vs_consensus.hd95 == pytest.approx(math.hypot(30, 30))
    assert case.model_within_reader_range is False
    empty = ag.case_agreement([a * 0, a * 0, a * 0], model_mask=a)
    assert empty.labels == () and empty.pairs[0].dice == 1.0 and empty.kappa == 1.0
    assert empty.model_vs_consensus is not None and empty.model_vs_consensus.dice == 0.0
    assert _plain_json(empty.to_dict())


def test_case_agreement_512_three_readers(mni_slice: np.ndarray) -> None:
    # real GM/WM label map scaled to 512 x 512 (nearest), three plausible readers and a model
    labels = ndimage.zoom(mni_slice, (512 / mni_slice.shape[0], 512 / mni_slice.shape[1]), order=0)
    assert labels.shape == (512, 512)
    readers = [labels, ndimage.grey_dilation(labels, size=(3, 3)), ndimage.grey_erosion(labels, size=(3, 3))]
    model = ndimage.shift(labels, (2, -1), order=0)
    ag.case_agreement(readers, (0.5, 0.5), model_mask=model)  # warm-up: first SimpleITK call
    start = time.perf_counter()
    case = ag.case_agreement(readers, (0.5, 0.5), model_mask=model)
    elapsed = time.perf_counter() - start
    print(f"case_agreement 512x512, 3 readers, 2 labels + model: {elapsed:.3f} s")
    assert case.labels == (1, 2) and len(case.pairs) == 3  # seconds printed, not asserted (shared machine)


def test_case_agreement_3d_and_spacing_scales_distances() -> None:
    a = np.zeros((12, 16, 16), dtype=np.uint8)
    a[3:9, 4:12, 4:12] = 1
    b = np.roll(a, 2, axis=2)  # same box moved two voxels along the last axis
    one = ag.case_agreement([a, b, a], (1.0, 1.0, 1.0), tolerance_mm=2.0)
    two = ag.case_agreement([a, b, a], (3.0, 3.0, 3.0), tolerance_mm=6.0)
    assert one.pairs[0].dice == pytest.approx(2 * (6 * 8 * 6) / (2 * 6 * 8 * 8))
    assert one.pairs[0].hd95 == pytest.approx(ag.hausdorff95(a, b))
    assert two.pairs[0].hd95 == pytest.approx(3 * one.pairs[0].hd95)
    assert two.pairs[0].assd == pytest.approx(3 * one.pairs[0].assd)
    assert two.pairs[0].surface_dice == pytest.approx(one.pairs[0].surface_dice)
    assert np.array_equal(one.consensus, a)
