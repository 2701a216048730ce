import numpy as np
import pytest

from annotations.models import Image
from tests.helpers import png_upload, upload_images
from workers.services.imaging import image_analyse, intensity_stats, window_presets_for


def test_intensity_stats_known_answer():
    stats = intensity_stats(np.arange(1001, dtype=np.int16).reshape(1, 7, 143))
    assert stats["min"] == 0 and stats["max"] == 1000 and stats["median"] == 500
    assert stats["p1"] == pytest.approx(10.0)


def test_ct_gets_standard_presets_and_file_presets_stay_first():
    presets = window_presets_for(
        "CT", {"p0_5": -1000, "p99_5": 1000}, [{"name": "file", "center": 1, "width": 2}]
    )
    names = [p["name"] for p in presets]
    assert names[0] == "file" and {"lung", "bone", "soft tissue", "brain", "auto"} <= set(names)
    mr = window_presets_for("MR", {"p0_5": 10, "p99_5": 110}, [])
    assert mr == [{"name": "auto", "center": 60, "width": 100}]


@pytest.mark.django_db(transaction=True)
def test_import_enqueues_analysis_which_is_idempotent(dm_client, project):
    # transaction=True: on_commit callbacks fire, and eager Celery runs the task in-process.
    job = upload_images(dm_client, project, {"file": png_upload()})
    image = Image.objects.get(pk=job["images"][0]["id"])
    assert image.status == "ready" and image.stats["max"] <= 255
    stamp = image.window_presets
    image_analyse(image_id=image.pk)  # a second delivery changes nothing
    image.refresh_from_db()
    assert image.window_presets == stamp
