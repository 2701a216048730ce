"""Explanation-quality metrics: hand-derived deletion/insertion AUCs, crafted maps, consistency."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from workers.ml.explain import quality as eq
from workers.ml.models.device import limit_cpu_threads

limit_cpu_threads(1)

SIZE, TOP, SIDE = 32, 10, 8  # a bright 8 x 8 square (64 of 1024 pixels) on a black 32 x 32 image


def bright_square() -> tuple[np.ndarray, np.ndarray]:
    region = np.zeros((SIZE, SIZE), dtype=bool)
    region[TOP : TOP + SIDE, TOP : TOP + SIDE] = True
    return region.astype(np.float32)[None], region


def region_score(region: np.ndarray):
    """A model whose score is the mean intensity inside `region` only (in [0, 1] for images in [0, 1])."""

    def score(batch: np.ndarray) -> np.ndarray:
        assert batch.ndim == 4 and batch.shape[1:] == (1, SIZE, SIZE)
        return batch[:, 0][:, region].mean(axis=1)

    return score


def test_perfect_map_auc_known_values() -> None:
    # steps = 16 -> 64 pixels per step: step 1 removes exactly the square. Mean baseline = 64/1024.
    # deletion: 1 -> 1/16 at x = 1/16, flat after: (1 + 1/16)/2 * 1/16 + 1/16 * 15/16
    # insertion: 1/16 -> 1 at x = 1/16, flat after: (1 + 1/16)/2 * 1/16 + 15/16
    image, region = bright_square()
    score = region_score(region)
    deletion = eq.deletion_curve(score, image, region.astype(float), steps=16, baseline="mean")
    assert deletion.fractions.tolist() == pytest.approx(np.linspace(0, 1, 17).tolist())
    assert deletion.scores[0] == pytest.approx(1.0) and deletion.scores[1:] == pytest.approx(1 / 16)
    assert deletion.auc == pytest.approx(1.0625 / 32 + 15 / 256)
    insertion = eq.insertion_auc(score, image, region.astype(float), steps=16, baseline="mean")
    assert insertion == pytest.approx(1.0625 / 32 + 15 / 16)


@pytest.mark.parametrize("baseline", ["mean", "blur"])
def test_perfect_map_beats_random_map(baseline: str) -> None:
    image, region = bright_square()
    score = region_score(region)
    perfect = region.astype(float) + 0.01 * np.random.default_rng(0).random(region.shape)
    random_map = np.random.default_rng(1).random(region.shape)
    kw = {"steps": 32, "baseline": baseline}
    d_perfect, d_random = (
        eq.deletion_auc(score, image, perfect, **kw),
        eq.deletion_auc(score, image, random_map, **kw),
    )
    i_perfect, i_random = (
        eq.insertion_auc(score, image, perfect, **kw),
        eq.insertion_auc(score, image, random_map, **kw),
    )
    assert d_perfect < d_random and i_perfect > i_random
    assert all(0.0 <= v <= 1.0 for v in (d_perfect, d_random, i_perfect, i_random))


def test_score_fn_is_called_in_batches() -> None:
    image, region = bright_square()
    inner = region_score(region)
    sizes: list[int] = []

    def counting(batch: np.ndarray) -> np.ndarray:
        sizes.append(batch.shape[0])
        return inner(batch)

    eq.deletion_auc(counting, image, region.astype(float), steps=16, batch_size=4)
    assert sizes == [4, 4, 4, 4, 1]  # 17 evaluations


def test_bad_score_fn_and_shapes_raise() -> None:
    image, region = bright_square()
    with pytest.raises(ValueError):
        eq.deletion_auc(lambda b: np.zeros(b.shape[0] + 1), image, region.astype(float))
    with pytest.raises(ValueError):
        eq.insertion_auc(region_score(region), image, np.zeros((4, 4)))


def test_pointing_game_with_tolerance() -> None:
    mask = np.zeros((20, 20), dtype=np.uint8)
    mask[5:10, 5:10] = 1
    inside = np.zeros((20, 20))
    inside[7, 7] = 1.0
    assert eq.pointing_game(inside, mask)
    outside = np.zeros((20, 20))
    outside[7, 12] = 1.0  # 3 pixels right of the mask's last column (9)
    assert not eq.pointing_game(outside, mask)
    assert not eq.pointing_game(outside, mask, tolerance_px=2.0)
    assert eq.pointing_game(outside, mask, tolerance_px=3.0)


def test_pointing_game_flat_map_and_empty_mask_do_not_score() -> None:
    mask = np.zeros((10, 10), dtype=np.uint8)
    mask[2:5, 2:5] = 1
    assert not eq.pointing_game(np.ones((10, 10)), mask)
    peak = np.zeros((10, 10))
    peak[3, 3] = 1.0
    assert not eq.pointing_game(peak, np.zeros((10, 10)))


def test_energy_inside_crafted_maps() -> None:
    mask = np.zeros((10, 10), dtype=np.uint8)
    mask[0:4, 0:4] = 1
    saliency = np.full((10, 10), 0.5)
    saliency[mask == 1] = 1.0
    assert eq.energy_inside(saliency, mask) == pytest.approx(16 / (16 + 84 * 0.5))
    signed = np.where(mask == 1, 2.0, -1.0)  # negative evidence outside is ignored
    assert eq.energy_inside(signed, mask) == 1.0
    assert eq.energy_inside(np.zeros((10, 10)), mask) == 0.0


def smooth_image(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return ndimage.gaussian_filter(rng.random((48, 48)), 3).astype(np.float32)[None]


def test_consistency_of_deterministic_explainer_without_noise_is_one() -> None:
    image = smooth_image()

    def explain(x: np.ndarray) -> np.ndarray:
        return x[0] ** 2  # pointwise, so it moves exactly with the image

    assert eq.consistency(explain, image, noise_std=0.0, shift_px=0, n=3) == 1.0
    assert eq.consistency(explain, image, noise_std=0.0, shift_px=3, n=5) == pytest.approx(1.0, abs=1e-9)
    assert eq.consistency(explain, image, noise_std=0.0, shift_px=3, n=5, similarity="ssim") == pytest.approx(
        1.0, abs=1e-9
    )


def test_consistency_detects_unstable_and_position_bound_explainers() -> None:
    image = smooth_image()
    fixed = np.add.outer(np.sin(np.arange(48) / 2.0), np.cos(np.arange(48) / 3.0))

    def ignores_image(x: np.ndarray) -> np.ndarray:
        return fixed  # does not move with the content, so undoing the shift misaligns it

    assert eq.consistency(ignores_image, image, noise_std=0.0, shift_px=0, n=2) == 1.0
    assert eq.consistency(ignores_image, image, noise_std=0.0, shift_px=3, n=5) < 0.95

    def edges(x: np.ndarray) -> np.ndarray:
        return np.abs(ndimage.laplace(x[0].astype(np.float64)))  # amplifies pixel noise

    quiet = eq.consistency(edges, image, noise_std=0.0005, shift_px=0, n=4)
    loud = eq.consistency(edges, image, noise_std=0.05, shift_px=0, n=4)
    assert loud < quiet < 1.0

    def random_map(x: np.ndarray) -> np.ndarray:
        return np.random.default_rng(int(x.sum() * 1e6) % 2**32).random(x.shape[1:])

    assert abs(eq.consistency(random_map, image, noise_std=0.01, shift_px=0, n=4)) < 0.1
