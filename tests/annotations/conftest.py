"""Fixtures shared by the queue and lease tests."""

import nibabel as nib
import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from annotations.models import Case
from tests.helpers import upload_images
from workers.services.queue_order import QueueEntry, queue_priorities_set

H, W, S = 16, 12, 6


@pytest.fixture
def pool(project, dm_client):
    """A project with S pool cases (one 16x12 volume), priorities 0..S-1 (the last slice first)."""
    vol = np.random.default_rng(0).normal(size=(W, H, S)).astype(np.float32)
    data = nib.Nifti1Image(vol, np.eye(4)).to_bytes()
    upload_images(dm_client, project, {"file": SimpleUploadedFile("v.nii", data)})
    cases = list(Case.objects.filter(project=project).order_by("slice_index"))
    queue_priorities_set(
        project=project,
        entries=[
            QueueEntry(c.pk, float(c.slice_index), {"strategy": "entropy", "rank": S - c.slice_index})
            for c in cases
        ],
    )
    return cases
