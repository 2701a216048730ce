"""The few-labels recipe's pieces: foreground-oversampled crops, fixed steps drawn with replacement, and a
short run of the whole recipe on phantoms."""

import numpy as np

from workers.ml.models.config import NetworkConfig, TrainConfig
from workers.ml.models.training import _Batches, train
from workers.ml.models.transforms import train_transforms
from workers.ml.research.phantoms import PhantomSpec, make_phantoms


def _sparse(n=40, size=64):
    """Images with one small labelled square in every tenth image only."""
    rng = np.random.default_rng(0)
    images, masks = [], []
    for i in range(n):
        img = rng.normal(0, 0.1, (1, size, size)).astype(np.float32)
        m = np.zeros((size, size), np.uint8)
        if i % 10 == 0:
            m[40:44, 40:44] = 1
            img[0, 40:44, 40:44] += 1.0
        images.append(img)
        masks.append(m)
    return images, masks


def test_label_centred_crops_always_hold_the_structure_uniform_ones_rarely():
    images, masks = _sparse()
    labelled = [i for i, m in enumerate(masks) if m.any()]
    # uniform crops hold a pixel of the square ~15 % of the time (19/49 start positions per axis)
    for centre, lo, hi in ((False, 0.05, 0.3), (True, 1.0, 1.0)):
        t = train_transforms((16, 16), augment=False, centre_on_label=centre)
        t.set_random_state(seed=1)
        hits = 0
        for k in range(200):
            i = labelled[k % len(labelled)]
            d = t({"image": images[i], "label": masks[i][None]})
            d = d[0] if isinstance(d, list) else d
            hits += bool(np.asarray(d["label"]).any())
        assert lo <= hits / 200 <= hi, (centre, hits)


def test_oversampling_draws_the_asked_share_from_the_labelled_images():
    """One image in ten holds the structure: with fg_oversample 1/3, about 1/3 + 2/3 x 1/10 of the samples
    come from labelled images (a per-image crop rule alone would give 1/10 x 1/3)."""
    images, masks = _sparse(n=40)
    cfg = TrainConfig(batch_size=8, steps_per_epoch=250, fg_oversample=1 / 3, patch_size=(16, 16))
    steps = _Batches(images, masks, cfg).epoch()
    idx, centre = np.concatenate([s[0] for s in steps]), np.concatenate([s[1] for s in steps])
    assert len(steps) == 250 and all(s.shape == (2, 8) for s in steps)  # drawn with replacement
    assert abs(centre.mean() - 1 / 3) < 0.03
    assert all(masks[i].any() for i in idx[centre == 1])
    assert abs(np.mean([masks[i].any() for i in idx]) - (1 / 3 + 2 / 3 * 0.1)) < 0.03
    plain = _Batches(images, masks, TrainConfig(batch_size=8, patch_size=(16, 16))).epoch()
    assert len(plain) == 5 and not np.concatenate([s[1] for s in plain]).any()  # one pass, no oversampling


def test_the_recipe_trains_end_to_end_and_is_deterministic():
    batch = make_phantoms(12, seed=3, spec=PhantomSpec(size=(48, 48)))
    net = NetworkConfig(channels=(8, 16, 32), num_res_units=1)
    cfg = TrainConfig(
        epochs=2,
        batch_size=4,
        patch_size=(32, 32),
        steps_per_epoch=3,
        fg_oversample=0.33,
        strong_augment=True,
        batch_dice=True,
        poly_lr=True,
        seed=0,
    )
    args = (
        net,
        cfg,
        list(batch.images[:8]),
        list(batch.masks[:8]),
        list(batch.images[8:]),
        list(batch.masks[8:]),
    )
    a, b = train(*args), train(*args)
    assert len(a.history) == 2 and np.isfinite(a.history[-1].train_loss)
    for (ka, va), (_, vb) in zip(a.model.state_dict().items(), b.model.state_dict().items(), strict=True):
        assert np.array_equal(va.numpy(), vb.numpy()), ka


def test_neighbouring_slices_become_channels_clamped_at_the_ends():
    from types import SimpleNamespace

    from workers.ml.research.recipe import with_neighbours

    items = [SimpleNamespace(axis="axial", index=i) for i in (3, 4, 5, 7)]  # slice 6 was dropped
    prepared = [np.full((1, 2, 2), float(s.index), np.float32) for s in items]
    out = with_neighbours(items, prepared, 3)
    assert [tuple(o[:, 0, 0]) for o in out] == [(3, 3, 4), (3, 4, 5), (4, 5, 5), (7, 7, 7)]


def test_the_kidney_task_keeps_the_kidneys_only_a_small_share_of_the_pixels():
    from workers.ml.imaging import datasets
    from workers.ml.research.recipe import totalseg_kidney

    ct, sparse = datasets.totalseg_ct(), totalseg_kidney()
    kidney = next(v for v, n in ct.label_names.items() if "kidney" in n)
    assert sparse.label_names == {1: ct.label_names[kidney]} and set(np.unique(sparse.labels)) == {0, 1}
    np.testing.assert_array_equal(sparse.labels == 1, ct.labels == kidney)
    np.testing.assert_array_equal(sparse.image, ct.image)
    holds = sparse.labels.any(axis=(0, 1))  # per axial slice
    assert 0 < holds.mean() < 1 and 0 < sparse.labels.mean() < 0.05


def test_label_picks_random_and_half_from_the_slices_that_hold_the_structure():
    import pytest

    from workers.ml.research.recipe import pick_labels

    masks = [np.full((4, 4), i % 5 == 0, dtype=np.uint8) for i in range(50)]  # 10 of 50 hold a label
    fg = pick_labels(masks, 7, np.random.default_rng(0), "fg_half")
    assert len(set(fg.tolist())) == 7 and sum(masks[i].any() for i in fg) == 4  # ceil(7 / 2)
    few = pick_labels(masks[:6], 5, np.random.default_rng(0), "fg_half")  # only 2 hold one: all of them
    assert sum(masks[i].any() for i in few) == 2 and len(set(few.tolist())) == 5
    rnd = pick_labels(masks, 7, np.random.default_rng(0), "random")
    assert len(set(rnd.tolist())) == 7
    np.testing.assert_array_equal(rnd, pick_labels(masks, 7, np.random.default_rng(0), "random"))
    with pytest.raises(ValueError):
        pick_labels(masks, 7, np.random.default_rng(0), "best")
