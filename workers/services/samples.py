"""Sample data that ships inside installed packages (no download at run time), for the demo project."""

from workers.ml.imaging.datasets import LabelledVolume, mni152_tissue


def demo_volume() -> LabelledVolume:
    """MNI152 tissue classes (nilearn): the demo project's images and reference labels."""
    return mni152_tissue()
