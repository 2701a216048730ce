"""Bad input to the volume endpoints (issue 19) and the bundle fine-tune start (issue 18) gets a clear 4xx,
never a 500: unknown views, planes outside the volume, a case that does not exist or is not the caller's,
a volume without labels, a training run asking for a bundle that was never imported."""

import numpy as np

from annotations.models import Role
from tests.annotations.test_volume import ACQUISITIONS, _affine
from tests.helpers import volume_image


def test_every_volume_endpoint_answers_bad_input_with_a_4xx(project, member, client_for):
    dm = member(Role.DATA_MANAGER)
    image = volume_image(project, dm, np.zeros((3, 8, 6), np.int16), _affine(ACQUISITIONS["axial"]))
    case = image.cases.get(slice_index=1)
    client = client_for(dm)
    base = f"/api/v1/cases/{case.pk}/volume"
    bad = {
        f"{base}/oblique/0": 404,  # no such view
        f"{base}/axial/3": 404,  # beyond the slices
        f"{base}/coronal/8": 404,
        f"{base}/sagittal/-1": 404,  # not even a route
        f"{base}/axial/x": 404,
        f"{base}/axial/0/label.png": 404,  # unlabelled
        f"{base}/coronal/99/label.png": 404,
        f"{base}/axial/0/label.png?layout=sideways": 404,
        f"{base}/interpolated.png": 404,  # nothing to interpolate from
        f"{base}/agreement": 404,  # no readers yet
        "/api/v1/cases/999999/volume": 404,
        "/api/v1/cases/999999/volume/axial/0": 404,
        "/api/v1/cases/999999/volume/agreement": 404,
    }
    for url, status in bad.items():
        assert client.get(url).status_code == status, url
    assert client_for(member(Role.ANNOTATOR)).get(base).status_code == 404  # never given the case
    url = f"/api/v1/projects/{project.pk}"
    for body in ({"unit_slices": -1}, {"unit_slices": "two"}, {"unit_score": 3}, {"unit_slices": None}):
        assert client.patch(url, body, format="json").status_code == 400, body


def test_starting_a_bundle_fine_tune_without_a_bundle_is_a_400(project, member, client_for):
    ml = client_for(member(Role.ML_ENGINEER))
    resp = ml.post(
        f"/api/v1/projects/{project.pk}/training-runs", {"config": {"backend": "monai_bundle"}}, format="json"
    )
    assert resp.status_code == 400 and "import a bundle" in resp.content.decode(), resp.content
