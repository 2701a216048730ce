"""A case's volume seen in 3D context (issue 19): the three orthogonal views of the image a slice case belongs
to, each resliced from the stored (S, H, W) pixels and shown the way radiologists read it, with orientation
markers from the image's direction cosines, and each slice's current label where the caller may see it.

Geometry: `Image.affine` maps an array index (s, h, w, 1) to RAS millimetres (+x = the patient's right,
+y = anterior, +z = superior). Each array axis points mostly along one anatomical axis; the view whose plane
is normal to x is sagittal, to y coronal, to z axial. A view is the plane at one index of that array axis,
its other two axes laid out in the radiological convention: axial with anterior up and the patient's right
on the screen's left; coronal with superior up and right on the left; sagittal with superior up and
anterior on the left. Markers name the anatomical direction at each edge of the shown plane (the dominant
component of that axis's direction; an oblique axis shows its two largest components, e.g. "RA"). An
image without geometry (PNG, TIFF, one DICOM frame) is laid out as an axial stack: its slices are the axial
view, rows run anterior to posterior and columns right to left, as a NIfTI import of the same array would."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from annotations.models import Annotation, AnnotationKind, Assignment, AssignmentStatus, Case, Image
from annotations.selectors.units import unit_range
from hitl.core.permissions import reads_blind
from hitl.core.storage import bytes_load, mask_from_png
from hitl.core.types import User

VIEWS = ("axial", "coronal", "sagittal")
_NORMAL_OF = {"sagittal": 0, "coronal": 1, "axial": 2}  # the RAS axis a view's plane is normal to
_LETTERS = (("L", "R"), ("P", "A"), ("I", "S"))  # RAS axis -> (negative, positive) end
# Per view: the RAS axis that runs down the screen and the end at its top; the one across and its left end.
_LAYOUT = {
    "axial": ((1, +1), (0, +1)),  # rows: y, anterior (+y) at the top; columns: x, right (+x) on the left
    "coronal": ((2, +1), (0, +1)),  # rows: z, superior at the top; columns: x, right on the left
    "sagittal": ((2, +1), (1, +1)),  # rows: z, superior at the top; columns: y, anterior on the left
}
_OBLIQUE = 0.35  # a second letter when the axis leans this far (cosine) towards another anatomical axis


def index_affine(image: Image) -> np.ndarray:
    """(s, h, w, 1) -> RAS mm: the image's own, else an axial stack on its spacing (see module docstring)."""
    if image.affine:
        return np.asarray(image.affine, dtype=np.float64)
    row_mm, col_mm, slice_mm = (float(v) for v in image.spacing)
    affine = np.zeros((4, 4))
    affine[:3, 0] = (0.0, 0.0, slice_mm)  # s: superior
    affine[:3, 1] = (0.0, -row_mm, 0.0)  # h: down the image = posterior
    affine[:3, 2] = (-col_mm, 0.0, 0.0)  # w: along a row = towards the patient's left
    affine[3, 3] = 1.0
    return affine


def letters(direction: np.ndarray) -> str:
    """The anatomical direction(s) a RAS vector points to, largest component first ("R", "PS", ...)."""
    unit = direction / max(float(np.linalg.norm(direction)), 1e-12)
    order = np.argsort(-np.abs(unit))
    picked = [a for a in order if a == order[0] or abs(unit[a]) >= _OBLIQUE]
    return "".join(_LETTERS[a][int(unit[a] > 0)] for a in picked)


@dataclass(frozen=True)
class Axis:
    array_axis: int  # 0 = s, 1 = h, 2 = w
    flip: bool  # index 0 of the shown axis is the array's last


@dataclass(frozen=True)
class View:
    name: str
    normal: int  # the array axis whose index picks the plane
    count: int  # planes in this view
    rows: Axis
    cols: Axis
    markers: dict[str, str]  # top, bottom, left, right
    spacing: tuple[float, float]  # (row_mm, col_mm) of the shown plane

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "normal_axis": self.normal,
            "count": self.count,
            "rows": {"axis": self.rows.array_axis, "flip": self.rows.flip},
            "cols": {"axis": self.cols.array_axis, "flip": self.cols.flip},
            "markers": self.markers,
            "spacing": list(self.spacing),
        }


def _dominant(directions: np.ndarray) -> list[int]:
    """RAS axis each array axis runs along (a permutation: ties go to the array axis that leans most)."""
    weights = np.abs(directions / np.linalg.norm(directions, axis=0, keepdims=True))  # (ras, array)
    best: tuple[float, tuple[int, ...]] = (-1.0, (0, 1, 2))
    for perm in ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)):
        score = sum(weights[perm[a], a] for a in range(3))
        if score > best[0]:
            best = (score, perm)
    return list(best[1])


def volume_views(image: Image) -> dict[str, View]:
    """The three views of `image` (see the module docstring)."""
    affine = index_affine(image)
    directions = affine[:3, :3]  # column a: the RAS step of array axis a
    ras_of = _dominant(directions)
    array_of = {ras: a for a, ras in enumerate(ras_of)}
    shape = [int(n) for n in image.shape[:3]]
    step_mm = np.linalg.norm(directions, axis=0)
    views = {}
    for name in VIEWS:
        (row_ras, row_top), (col_ras, col_left) = _LAYOUT[name]
        rows = _axis(directions, array_of[row_ras], row_ras, row_top)
        cols = _axis(directions, array_of[col_ras], col_ras, col_left)
        down = directions[:, rows.array_axis] * (-1 if rows.flip else 1)
        across = directions[:, cols.array_axis] * (-1 if cols.flip else 1)
        markers = {
            "top": letters(-down),
            "bottom": letters(down),
            "left": letters(-across),
            "right": letters(across),
        }
        normal = array_of[_NORMAL_OF[name]]
        spacing = (float(step_mm[rows.array_axis]), float(step_mm[cols.array_axis]))
        views[name] = View(name, normal, shape[normal], rows, cols, markers, spacing)
    return views


def _axis(directions: np.ndarray, array_axis: int, ras: int, first_end: int) -> Axis:
    """Shown index 0 lies at `first_end` of RAS axis `ras`: flip the array axis when it runs the other way."""
    runs_towards_first = np.sign(directions[ras, array_axis]) == first_end
    return Axis(array_axis, bool(runs_towards_first))


def view_plane(pixels: np.ndarray, view: View, index: int) -> np.ndarray:
    """The (rows, cols) plane of view `view` at `index` along its normal array axis, laid out for display
    (an RGB image's trailing channel axis is kept). Raises IndexError outside 0..count-1."""
    if not 0 <= index < view.count:
        raise IndexError(f"{view.name} index {index} outside 0..{view.count - 1}")
    return laid_out(np.take(pixels, index, axis=view.normal), view)


def laid_out(plane: np.ndarray, view: View) -> np.ndarray:
    """A plane of the array normal to `view.normal` (its two other array axes in increasing order), turned
    and flipped for display."""
    remaining = [a for a in range(3) if a != view.normal]
    if remaining.index(view.rows.array_axis) != 0:
        plane = plane.T if plane.ndim == 2 else plane.transpose(1, 0, *range(2, plane.ndim))
    if view.rows.flip:
        plane = plane[::-1]
    if view.cols.flip:
        plane = plane[:, ::-1]
    return np.ascontiguousarray(plane)


def slice_label(*, image: Image, index: int, user: User, roles: set[str]) -> Annotation | None:
    """The label of slice `index` of `image` the caller may see: a blind reader's own latest revision there,
    the slice's current label for every other role; None for an unlabelled slice."""
    case = Case.objects.filter(image=image, slice_index=index).select_related("current_annotation").first()
    if case is None:
        return None
    if reads_blind(roles):
        return _own(case.annotations.all(), user).order_by("-revision").first()
    return case.current_annotation


def _own(annotations, user: User):
    return annotations.filter(author=user, kind=AnnotationKind.READER)


def labelled_slices(*, image: Image, user: User, roles: set[str]) -> list[int]:
    """Slice indices of `image` where `slice_label` finds a label (the panel asks for those only)."""
    if reads_blind(roles):
        mine = _own(Annotation.objects.filter(case__image=image), user)
        return sorted(set(mine.values_list("case__slice_index", flat=True)))
    current = Case.objects.filter(image=image, current_annotation__isnull=False)
    return sorted(current.values_list("slice_index", flat=True))


def visible_labels(*, image: Image, user: User, roles: set[str]) -> dict[int, Annotation]:
    """slice index -> the label `slice_label` gives there, for every labelled slice, in one query."""
    if reads_blind(roles):
        mine = _own(Annotation.objects.filter(case__image=image), user).select_related("case")
        out: dict[int, Annotation] = {}
        for ann in mine.order_by("-revision", "-id"):
            out.setdefault(ann.case.slice_index, ann)
        return out
    current = Case.objects.filter(image=image, current_annotation__isnull=False).select_related(
        "current_annotation"
    )
    return {c.slice_index: c.current_annotation for c in current if c.current_annotation is not None}


def label_plane(*, image: Image, view: View, index: int, user: User, roles: set[str]) -> np.ndarray:
    """The labels the caller may see on plane `index` of `view` (a reformatted view: one row of every
    labelled slice), laid out like `view_plane`; 0 where no slice was labelled."""
    shape = tuple(int(n) for n in image.shape[:3])
    volume = np.zeros(shape, dtype=np.uint8)
    for k, ann in visible_labels(image=image, user=user, roles=roles).items():
        volume[k] = mask_from_png(bytes_load(ann.mask_path))
    return view_plane(volume, view, index)


def interpolated_label(*, case: Case, user: User, roles: set[str]) -> tuple[np.ndarray, int, int] | None:
    """A label for `case`'s slice interpolated from the nearest labelled slices the caller may see on either
    side (shape-based interpolation: per label, the signed distance to its boundary, in mm, interpolated
    linearly between the two slices; a pixel takes the label whose interpolated distance is inside and
    largest). Returns (mask (H, W), slice below, slice above), or None without a labelled slice on each side."""
    k = case.slice_index
    done = labelled_slices(image=case.image, user=user, roles=roles)
    below, above = [i for i in done if i < k], [i for i in done if i > k]
    if not below or not above:
        return None
    a, b = below[-1], above[0]
    masks = []
    for index in (a, b):
        label = slice_label(image=case.image, index=index, user=user, roles=roles)
        if label is None:
            return None
        masks.append(mask_from_png(bytes_load(label.mask_path)))
    row_mm, col_mm = (float(v) for v in case.image.spacing[:2])
    return shape_interpolate(masks[0], masks[1], (k - a) / (b - a), (row_mm, col_mm)), a, b


def signed_distance(inside: np.ndarray, spacing: tuple[float, float]) -> np.ndarray:
    """mm from the boundary, positive inside, negative outside (-inf-free: an empty mask is all negative)."""
    if not inside.any():
        return np.full(inside.shape, -1e6)
    if inside.all():
        return np.full(inside.shape, 1e6)
    return ndimage.distance_transform_edt(inside, sampling=spacing) - ndimage.distance_transform_edt(
        ~inside, sampling=spacing
    )


def shape_interpolate(
    a: np.ndarray, b: np.ndarray, t: float, spacing: tuple[float, float] = (1.0, 1.0)
) -> np.ndarray:
    """The label map a fraction `t` (0..1) of the way from label map `a` to `b` (see `interpolated_label`)."""
    out = np.zeros(a.shape, dtype=np.uint8)
    best = np.zeros(a.shape)
    for value in sorted(set(np.unique(a)) | set(np.unique(b)) - {0}):
        d = (1 - t) * signed_distance(a == value, spacing) + t * signed_distance(b == value, spacing)
        take = (d > 0) & (d > best)
        out[take], best[take] = value, d[take]
    return out


def volume_payload(*, case: Case, user: User, roles: set[str]) -> dict[str, Any]:
    """What the editor's volume panel starts from: the image's views, where this case lies in them, the
    markers of the editor's own (unturned) slice view, and which slices are labelled."""
    image = case.image
    views = volume_views(image)
    acquired = next(v for v in views.values() if v.normal == 0)
    directions = index_affine(image)[:3, :3]
    cursor = [case.slice_index, int(image.shape[1]) // 2, int(image.shape[2]) // 2]
    return {
        "image": image.pk,
        "shape": [int(n) for n in image.shape[:3]],
        "case_slice": case.slice_index,
        "cursor": cursor,
        "acquired_view": acquired.name,
        "views": {name: v.to_dict() for name, v in views.items()},
        "slice_markers": {  # the editor's main view: the stored slice, rows = h, columns = w
            "top": letters(-directions[:, 1]),
            "bottom": letters(directions[:, 1]),
            "left": letters(-directions[:, 2]),
            "right": letters(directions[:, 2]),
        },
        "labelled_slices": labelled_slices(image=image, user=user, roles=roles),
        "unit": _unit(case, user),
    }


def _unit(case: Case, user: User) -> dict[str, Any]:
    """The unit of work the case belongs to (selectors.units) and which of its slices this user submitted."""
    first, last = unit_range(case.project, case)
    done = Assignment.objects.filter(
        reader=user,
        status=AssignmentStatus.SUBMITTED,
        case__image=case.image,
        case__slice_index__gte=first,
        case__slice_index__lte=last,
    ).values_list("case__slice_index", flat=True)
    return {"slices": case.project.unit_slices, "first": first, "last": last, "done": sorted(set(done))}
