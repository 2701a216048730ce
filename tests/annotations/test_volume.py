"""A case's volume in 3D context (issue 19): the axial, coronal and sagittal views match an independent
reslice of the same array (nibabel's reorientation to RAS, then the radiological layout), orientation markers
match the direction cosines for an axial, a coronal and a sagittal acquisition, and the API serves planes and
the labels a caller may see."""

import nibabel as nib
import numpy as np
import pytest

from annotations.models import Image, Role
from annotations.selectors.volume import letters, view_plane, volume_views
from hitl.core.storage import mask_from_png
from tests.helpers import volume_image
from tests.workers.test_training_helpers import annotate

SHAPE = (7, 9, 11)  # (S, H, W): every axis its own length, so a swapped axis cannot pass
# index (s, h, w) -> RAS direction of each array axis, for three acquisitions (spacing 2.5 / 0.8 / 0.6 mm)
ACQUISITIONS = {
    # axial slices from inferior to superior, rows anterior -> posterior, columns right -> left (NIfTI import)
    "axial": [(0, 0, 2.5), (0, -0.8, 0), (-0.6, 0, 0)],
    # coronal slices posterior -> anterior, rows superior -> inferior, columns right -> left (DICOM coronal)
    "coronal": [(0, 2.5, 0), (0, 0, -0.8), (-0.6, 0, 0)],
    # sagittal slices left -> right, rows superior -> inferior, columns anterior -> posterior
    "sagittal": [(2.5, 0, 0), (0, 0, -0.8), (0, -0.6, 0)],
}
STANDARD = {  # what a radiologist expects at each edge of each view, whatever the acquisition
    "axial": {"top": "A", "bottom": "P", "left": "R", "right": "L"},
    "coronal": {"top": "S", "bottom": "I", "left": "R", "right": "L"},
    "sagittal": {"top": "S", "bottom": "I", "left": "A", "right": "P"},
}


def _affine(columns) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = np.array(columns, dtype=np.float64).T
    affine[:3, 3] = (-10.0, 20.0, -30.0)
    return affine


def _image(project, user, affine, pixels) -> Image:
    return volume_image(project, user, pixels, affine)


def _pixels() -> np.ndarray:
    return np.arange(np.prod(SHAPE), dtype=np.int16).reshape(SHAPE)  # every voxel its own value


def _reference(pixels: np.ndarray, affine: np.ndarray, view: str, normal_axis: int, index: int) -> np.ndarray:
    """nibabel's reorientation to RAS+ (X right, Y anterior, Z superior), then the radiological layout."""
    canon = nib.as_closest_canonical(nib.Nifti1Image(pixels, affine))
    voxel = [0, 0, 0]
    voxel[normal_axis] = index
    world = affine @ np.array([*voxel, 1.0])
    i, j, k = np.rint(np.linalg.inv(canon.affine) @ world)[:3].astype(int)
    data = np.asanyarray(canon.dataobj)
    if view == "axial":  # rows: Y from anterior down; columns: X from the patient's right
        return data[::-1, ::-1, k].T
    if view == "coronal":  # rows: Z from superior down; columns: X from the right
        return data[::-1, j, ::-1].T
    return data[i, ::-1, ::-1].T  # sagittal: rows Z from superior down; columns: Y from anterior


def _give(case, reader, slot: int) -> None:
    """The queue gave `case` to `reader` (a lease), so a blind reader may open it."""
    from django.utils import timezone

    from annotations.models import Assignment

    now = timezone.now()
    Assignment.objects.create(
        project=case.project, case=case, reader=reader, slot=slot, claimed_at=now, expires_at=now
    )


@pytest.mark.parametrize("acquisition", list(ACQUISITIONS))
def test_every_view_equals_an_independent_reslice_and_its_markers_are_the_standard_ones(
    project, member, acquisition
):
    affine = _affine(ACQUISITIONS[acquisition])
    pixels = _pixels()
    image = _image(project, member(Role.DATA_MANAGER), affine, pixels)
    views = volume_views(image)
    assert next(v.name for v in views.values() if v.normal == 0) == acquisition  # the slices' own plane
    for name, view in views.items():
        assert view.markers == STANDARD[name], (acquisition, name, view.markers)
        for index in (0, view.count // 2, view.count - 1):
            ours = view_plane(pixels, view, index)
            ref = _reference(pixels, affine, name, view.normal, index)
            assert ours.shape == ref.shape and np.array_equal(ours, ref), (acquisition, name, index)


@pytest.mark.parametrize("acquisition", list(ACQUISITIONS))
def test_the_editor_slice_markers_follow_the_direction_cosines(project, member, client_for, acquisition):
    """The editor's own (unturned) slice: bottom = where +row points, right = where +column points; nibabel's
    aff2axcodes names the same directions from the affine."""
    affine = _affine(ACQUISITIONS[acquisition])
    dm = member(Role.DATA_MANAGER)
    image = _image(project, dm, affine, _pixels())
    case = image.cases.get(slice_index=3)
    payload = client_for(dm).get(f"/api/v1/cases/{case.pk}/volume").json()
    _s, h_code, w_code = nib.aff2axcodes(affine)
    markers = payload["slice_markers"]
    assert (markers["bottom"], markers["right"]) == (h_code, w_code)
    opposite = {"L": "R", "R": "L", "A": "P", "P": "A", "S": "I", "I": "S"}
    assert (markers["top"], markers["left"]) == (opposite[h_code], opposite[w_code])
    assert payload["acquired_view"] == acquisition and payload["case_slice"] == 3
    assert payload["shape"] == list(SHAPE) and set(payload["views"]) == {"axial", "coronal", "sagittal"}


def test_an_oblique_axis_names_its_two_largest_directions():
    assert letters(np.array([0.0, 0.0, 1.0])) == "S"
    assert letters(np.array([-0.9, 0.44, 0.0])) == "LA"  # 26 degrees towards anterior
    assert letters(np.array([0.2, -0.98, 0.0])) == "P"  # 12 degrees: still plain posterior


def test_an_image_without_geometry_is_laid_out_as_an_axial_stack(project, member):
    image = _image(project, member(Role.DATA_MANAGER), None, _pixels())
    views = volume_views(image)
    assert views["axial"].normal == 0 and views["axial"].markers == STANDARD["axial"]
    assert np.array_equal(view_plane(_pixels(), views["axial"], 2), _pixels()[2])  # as stored, unturned


def test_the_api_serves_planes_and_only_the_labels_a_caller_may_see(project, member, client_for):
    dm, reader, other = member(Role.DATA_MANAGER), member(Role.ANNOTATOR), member(Role.ANNOTATOR)
    affine = _affine(ACQUISITIONS["coronal"])
    image = _image(project, dm, affine, _pixels())
    case = image.cases.get(slice_index=2)
    _give(case, reader, slot=0)
    mask = np.zeros(SHAPE[1:], np.uint8)
    mask[2:5, 3:8] = 1
    annotate(image.cases.get(slice_index=4), mask=mask, user=reader)
    base = f"/api/v1/cases/{case.pk}/volume"
    client = client_for(reader)
    views = client.get(base).json()["views"]
    resp = client.get(f"{base}/sagittal/5")
    shape = tuple(int(n) for n in resp["X-Shape"].split(","))
    got = np.frombuffer(resp.content, dtype=resp["X-Dtype"]).reshape(shape)
    assert np.array_equal(got, view_plane(_pixels(), volume_views(image)["sagittal"], 5))
    assert views["sagittal"]["count"] == SHAPE[2] and views["coronal"]["normal_axis"] == 0
    label = client.get(f"{base}/coronal/4/label.png")  # the reader's own label on a neighbouring slice
    assert label.status_code == 200
    shown = mask_from_png(label.content)
    assert np.array_equal(shown, view_plane(mask[None], volume_views(image)["coronal"], 0))
    assert client.get(f"{base}/coronal/3/label.png").status_code == 404  # unlabelled
    labelled = np.zeros(SHAPE, np.uint8)
    labelled[4] = mask
    axial = volume_views(image)["axial"]  # reformatted from this coronal series: a row of every slice
    for index in range(axial.count):
        got = mask_from_png(client.get(f"{base}/axial/{index}/label.png").content)
        assert np.array_equal(got, view_plane(labelled, axial, index)), index
    assert client.get(f"{base}/axial/{axial.count}/label.png").status_code == 404
    assert client.get(f"{base}/oblique/1").status_code == 404
    assert client.get(f"{base}/sagittal/{SHAPE[2]}").status_code == 404
    _give(case, other, slot=1)
    blind = client_for(other)
    assert blind.get(f"{base}/coronal/4/label.png").status_code == 404  # another reader's label stays hidden
    hidden = [mask_from_png(blind.get(f"{base}/axial/{i}/label.png").content) for i in range(axial.count)]
    assert not any(m.any() for m in hidden)  # in the reformatted views too
    assert blind.get(base).json()["labelled_slices"] == [] and client.get(base).json()["labelled_slices"] == [
        4
    ]
    outsider = client_for(member(Role.ANNOTATOR))  # never given this case: the volume does not exist for them
    assert outsider.get(base).status_code == 404 and outsider.get(f"{base}/coronal/2").status_code == 404


def _disc(shape, cy, cx, r) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def test_shape_based_interpolation_known_answers():
    """Midway between concentric discs of radius 10 and 20 lies the disc of radius 15; a quarter of the way
    from a disc to an overlapping shifted copy lies (about) the disc shifted a quarter; labels interpolate
    independently; at the ends the masks come back."""
    from annotations.selectors.volume import shape_interpolate

    shape = (64, 64)
    a, b = _disc(shape, 32, 32, 10).astype(np.uint8), _disc(shape, 32, 32, 20).astype(np.uint8)
    mid = shape_interpolate(a, b, 0.5)
    assert (mid.astype(bool) ^ _disc(shape, 32, 32, 15)).sum() <= 8  # a few boundary pixels at most
    shifted = shape_interpolate(_disc(shape, 32, 28, 12), _disc(shape, 32, 36, 12), 0.25)
    ys, xs = np.nonzero(shifted)
    assert abs(xs.mean() - 30) < 0.5 and abs(ys.mean() - 32) < 0.5
    assert abs(len(xs) - _disc(shape, 32, 30, 12).sum()) <= 0.05 * len(xs)
    two = np.where(_disc(shape, 20, 20, 6), 1, 0) + np.where(_disc(shape, 44, 44, 6), 2, 0)
    assert set(np.unique(shape_interpolate(two, two, 0.5))) == {0, 1, 2}
    assert np.array_equal(shape_interpolate(two.astype(np.uint8), np.zeros(shape, np.uint8), 0.0), two)
    assert not shape_interpolate(a, np.zeros(shape, np.uint8), 0.6).any()  # past halfway to nothing


def test_the_api_interpolates_a_slice_between_the_readers_own_labels(project, member, client_for):
    dm, reader = member(Role.DATA_MANAGER), member(Role.ANNOTATOR)
    image = _image(project, dm, _affine(ACQUISITIONS["axial"]), np.zeros((5, 40, 40), np.int16))
    case = image.cases.get(slice_index=2)
    _give(case, reader, slot=0)
    client = client_for(reader)
    url = f"/api/v1/cases/{case.pk}/volume/interpolated.png"
    assert client.get(url).status_code == 404  # nothing labelled yet
    annotate(image.cases.get(slice_index=0), mask=_disc((40, 40), 20, 20, 5).astype(np.uint8), user=reader)
    assert client.get(url).status_code == 404  # one side only
    annotate(image.cases.get(slice_index=4), mask=_disc((40, 40), 20, 20, 13).astype(np.uint8), user=reader)
    resp = client.get(url)
    assert resp.status_code == 200 and resp["X-From-Slices"] == "0,4"
    got = mask_from_png(resp.content)
    assert abs(int(got.sum()) - int(_disc((40, 40), 20, 20, 9).sum())) <= 12  # halfway: radius 9
    stored = client.get(f"/api/v1/cases/{case.pk}/volume/axial/4/label.png?layout=stored")
    assert np.array_equal(mask_from_png(stored.content), _disc((40, 40), 20, 20, 13))  # as stored
    other = member(Role.ANNOTATOR)
    _give(case, other, slot=1)
    assert client_for(other).get(url).status_code == 404  # another reader's labels are not theirs to use
