"""DICOM SEG export (highdicom): one Segmentation per (image, track, layer) group of slices, referencing
the de-identified source instances kept at import, so the patient/study modules it copies hold only the
pseudonymised values. Images that did not come as DICOM are skipped (the manifest says so)."""

from __future__ import annotations

import io

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes

from annotations.models import DicomInstance, Project
from hitl.core.storage import bytes_load
from workers.services.exports.common import Item, ZipOut, group_stem, volume_groups

SERIES_NUMBER = 9900


def segment_descriptions(project: Project) -> tuple[list[hd.seg.SegmentDescription], np.ndarray]:
    """Segments 1..N for the project's label values in ascending order, and the value -> segment LUT."""
    lut = np.zeros(256, dtype=np.uint8)
    descriptions = []
    for number, cls in enumerate(sorted(project.label_classes, key=lambda c: c["value"]), start=1):
        lut[int(cls["value"])] = number
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=number,
                segment_label=str(cls["name"])[:64],
                segmented_property_category=codes.SCT.Tissue,
                segmented_property_type=codes.SCT.Tissue,
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
                tracking_uid=hd.UID(),
                tracking_id=f"label-{int(cls['value'])}",
            )
        )
    return descriptions, lut


def label_values(project: Project) -> np.ndarray:
    """Segment number -> label value (index 0 = background)."""
    values = sorted(int(c["value"]) for c in project.label_classes)
    return np.asarray([0, *values], dtype=np.uint8)


def _sources(image_id: int) -> dict[int, DicomInstance]:
    return {i.slice_index: i for i in DicomInstance.objects.filter(image_id=image_id)}


def write_dicom_seg(out: ZipOut, project: Project, items: list[Item], tick) -> int:
    """Returns how many masks were skipped because their image has no DICOM source."""
    descriptions, lut = segment_descriptions(project)
    skipped = 0
    instances_by_image: dict[int, dict[int, DicomInstance]] = {}
    for (image_id, track, layer), group in volume_groups(items).items():
        if image_id not in instances_by_image:
            instances_by_image[image_id] = _sources(image_id)
        instances = instances_by_image[image_id]
        usable = [i for i in group if i.ann.case.slice_index in instances]
        for item in group:
            if item not in usable:
                item.files["dicom_seg"] = None
                skipped += 1
                tick()
        if not usable:
            continue
        sources = [
            pydicom.dcmread(io.BytesIO(bytes_load(instances[i.ann.case.slice_index].path))) for i in usable
        ]
        seg = hd.seg.Segmentation(
            source_images=sources,
            pixel_array=np.stack([lut[i.mask()] for i in usable]),
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions,
            series_instance_uid=hd.UID(),
            series_number=SERIES_NUMBER,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer="HITL",
            manufacturer_model_name="hitl-export",
            software_versions="1",
            device_serial_number="0",
            series_description=f"labels {track}"[:64],
            omit_empty_frames=False,
        )
        buf = io.BytesIO()
        seg.save_as(buf)
        name = out.add(f"masks/dicom_seg/{group_stem(image_id, track, layer)}.dcm", buf.getvalue())
        for item in usable:
            item.files["dicom_seg"] = {
                "path": name,
                "sop_instance_uid": str(seg.SOPInstanceUID),
                "source_sop_instance_uid": instances[item.ann.case.slice_index].sop_instance_uid,
            }
            tick()
    return skipped
