"""The de-identified images behind the exported masks: grayscale as .nii.gz on the masks' grid, RGB as
PNG per slice, and for DICOM sources the de-identified instances kept at import."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image as PILImage

from annotations.models import Image
from hitl.core.storage import array_load, bytes_load
from workers.services.exports.common import Item, ZipOut
from workers.services.exports.nifti import volume_bytes


def _rgb_png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    PILImage.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="RGB").save(buf, format="PNG")
    return buf.getvalue()


def write_images(out: ZipOut, items: list[Item], tick) -> list[dict]:
    images: dict[int, Image] = {i.ann.case.image_id: i.image for i in items}
    entries = []
    for image_id in sorted(images):
        image = images[image_id]
        pixels = array_load(image.pixels_path)
        files = []
        if image.is_rgb:
            for s in range(pixels.shape[0]):
                files.append(
                    out.add(f"images/image-{image_id}/slice-{s:05d}.png", _rgb_png(pixels[s]), compress=False)
                )
        else:
            files.append(
                out.add(f"images/image-{image_id}.nii.gz", volume_bytes(pixels, image), compress=False)
            )
        for inst in image.dicom_instances.order_by("slice_index"):
            files.append(
                out.add(f"images/image-{image_id}/dicom/{inst.slice_index:05d}.dcm", bytes_load(inst.path))
            )
        entries.append(
            {
                "image_id": image_id,
                "source_kind": image.source_kind,
                "modality": image.modality,
                "shape": image.shape,
                "dtype": image.dtype,
                "spacing": image.spacing,
                "study_uid": image.study_uid or None,
                "series_uid": image.series_uid or None,
                "frame_of_reference_uid": image.frame_of_reference_uid or None,
                "files": files,
            }
        )
        tick()
    return entries
