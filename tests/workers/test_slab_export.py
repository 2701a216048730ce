"""A slab project end to end (issue 19): a reader claims, edits and submits the three slices of one slab of
an imported CT series (the queue hands them over one after another), then the export's DICOM SEG is read
back with highdicom and pydicom (one frame per labelled slice, referencing those slices' de-identified SOP
Instance UIDs, the masks exact) and its NIfTI round-trips the masks, the affine and the labelled slices."""

import gzip
import io
from collections import Counter

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest

from annotations.models import Case, DicomInstance, Role
from tests.annotations.test_queue import _submit
from tests.workers.test_export import _export
from tests.workers.test_export_helpers import blob_mask, checked_manifest, import_ct_series
from workers.ml.imaging.nifti import to_slices
from workers.services.exports.dicom_seg import label_values

pytestmark = pytest.mark.django_db


def test_claim_edit_three_slices_of_a_slab_submit_and_export(
    project, member, client_for, django_capture_on_commit_callbacks
):
    dm, reader = member(Role.DATA_MANAGER), member(Role.ANNOTATOR)
    image = import_ct_series(project, dm, n=6)
    project.unit_slices = 3
    project.save(update_fields=["unit_slices"])
    shape = tuple(int(n) for n in image.shape[1:3])
    client = client_for(reader)
    submitted: dict[int, np.ndarray] = {}
    for step in range(3):
        claimed = client.post(f"/api/v1/projects/{project.pk}/queue/claim").json()
        case = Case.objects.get(pk=claimed["case"])
        mask = blob_mask(shape, 20 + step, labels=(1,))
        assert _submit(client, case.pk, mask).status_code == 201
        submitted[case.slice_index] = mask
        unit = client.get(f"/api/v1/cases/{case.pk}/volume").json()["unit"]
        assert (unit["last"] - unit["first"], len(unit["done"])) == (2, step + 1)
    first = min(submitted)
    assert sorted(submitted) == [first, first + 1, first + 2] and first % 3 == 0  # one slab, whole

    _, members = _export(
        client_for(dm), project, django_capture_on_commit_callbacks, formats=["dicom_seg", "nifti"]
    )
    entries = {m["slice_index"]: m for m in checked_manifest(members)["masks"]}
    assert sorted(entries) == sorted(submitted)
    (seg_path,) = {e["files"]["dicom_seg"]["path"] for e in entries.values()}
    ds = pydicom.dcmread(io.BytesIO(members[seg_path]))
    segments = len(project.label_classes)  # a BINARY SEG holds one frame per (slice, segment)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"  # Segmentation Storage
    assert int(ds.NumberOfFrames) == 3 * segments
    seg = hd.seg.segread(io.BytesIO(members[seg_path]))
    instances = {i.slice_index: i.sop_instance_uid for i in DicomInstance.objects.filter(image=image)}
    referenced = [
        r.ReferencedSOPInstanceUID for r in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence
    ]
    assert sorted(referenced) == sorted(instances[k] for k in submitted)
    frames = Counter(
        f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        for f in seg.PerFrameFunctionalGroupsSequence
    )
    assert frames == {instances[k]: segments for k in submitted}  # each labelled slice, no other
    order = sorted(submitted)
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=[instances[k] for k in order], combine_segments=True, relabel=False
    )
    lut = label_values(project)
    for i, k in enumerate(order):
        assert np.array_equal(lut[pixels[i]], submitted[k])

    (nifti_path,) = {e["files"]["nifti"]["path"] for e in entries.values()}
    nii = nib.Nifti1Image.from_bytes(gzip.decompress(members[nifti_path]))
    volume = to_slices(np.asanyarray(nii.dataobj))
    for k, mask in submitted.items():
        assert np.array_equal(volume[k], mask)
    s, h, w = order[1], 7, 11
    ny, nx = shape
    voxel = np.array([nx - 1 - w, ny - 1 - h, s, 1.0])  # the same point through both affines
    np.testing.assert_allclose(
        nii.affine @ voxel, np.asarray(image.affine) @ np.array([s, h, w, 1.0]), atol=1e-4
    )
    (read_path,) = {e["files"]["nifti"]["labelled_slices_path"] for e in entries.values()}
    labelled = to_slices(
        np.asanyarray(nib.Nifti1Image.from_bytes(gzip.decompress(members[read_path])).dataobj)
    )
    assert [k for k in range(labelled.shape[0]) if labelled[k].all()] == order
