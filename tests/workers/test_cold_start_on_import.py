import nibabel as nib
import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from annotations.models import Case
from tests.helpers import upload_images


@pytest.mark.django_db(transaction=True)
def test_import_orders_the_pool_by_coldstart_diversity(project, dm_client):
    """With no model yet, importing pool images queues the cold-start order (eager Celery in tests)."""
    vol = np.random.default_rng(0).normal(size=(12, 16, 6)).astype(np.float32) * np.arange(1, 7)
    data = nib.Nifti1Image(vol, np.eye(4)).to_bytes()
    upload_images(dm_client, project, {"file": SimpleUploadedFile("v.nii", data)})
    cases = list(Case.objects.filter(project=project).order_by("-priority", "id"))
    assert {c.queue_reason.get("strategy") for c in cases} == {"coldstart"}
    assert len({c.priority for c in cases}) == len(cases)  # a full order, not ties
