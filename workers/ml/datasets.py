"""Real sample data that ships inside installed packages (no download at run time).

Each loader returns a `LabelledVolume` in RAS+ orientation (nibabel canonical), axes (X, Y, Z).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LabelledVolume:
    name: str
    image: np.ndarray  # float32 (X, Y, Z)
    labels: np.ndarray  # uint8 (X, Y, Z), 0 = background
    spacing: tuple[float, float, float]
    affine: np.ndarray  # 4x4 voxel -> RAS mm
    label_names: dict[int, str]
    modality: str


def mni152_tissue() -> LabelledVolume:
    """MNI152 2009 T1 template (1 mm) with grey matter = 1 and white matter = 2 (nilearn, bundled).

    The GM and WM masks are automatic (152-subject average); where they overlap WM wins, as the
    WM mask is the stricter of the two on this template.
    """
    import nibabel as nib
    from nilearn import datasets

    t1 = nib.as_closest_canonical(datasets.load_mni152_template(resolution=1))
    gm = nib.as_closest_canonical(datasets.load_mni152_gm_mask(resolution=1))
    wm = nib.as_closest_canonical(datasets.load_mni152_wm_mask(resolution=1))
    labels = np.zeros(t1.shape, dtype=np.uint8)
    labels[np.asarray(gm.dataobj) > 0] = 1
    labels[np.asarray(wm.dataobj) > 0] = 2
    zooms = tuple(float(z) for z in t1.header.get_zooms()[:3])
    return LabelledVolume(
        name="mni152_tissue",
        image=np.asarray(t1.dataobj, dtype=np.float32),
        labels=labels,
        spacing=zooms,  # type: ignore[arg-type]
        affine=np.asarray(t1.affine, dtype=np.float64),
        label_names={1: "grey matter", 2: "white matter"},
        modality="MR",
    )
