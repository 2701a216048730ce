"""The editor's reads: one JSON payload per case, then binary pixels and PNG layers."""

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.exceptions import NotFound
from rest_framework.response import Response
from rest_framework.views import APIView

from annotations.models import Annotation
from annotations.selectors.editor import annotation_visible, case_get_for_viewer, editor_payload
from annotations.selectors.volume import (
    VIEWS,
    interpolated_label,
    label_plane,
    laid_out,
    slice_label,
    view_plane,
    volume_payload,
    volume_views,
)
from hitl.core.apis.responses import png_response
from hitl.core.permissions import user_roles
from hitl.core.storage import array_open, bytes_load, mask_from_png, mask_to_png


def _case_for(request, case_id: int):
    return case_get_for_viewer(user=request.user, case_id=case_id)


class EditorPayloadApi(APIView):
    @extend_schema(responses=OpenApiTypes.OBJECT, operation_id="cases_editor_payload")
    def get(self, request, case_id: int):
        case, roles = _case_for(request, case_id)
        return Response(editor_payload(case=case, user=request.user, roles=roles))


def _raw(pixels) -> HttpResponse:
    """Little-endian, row-major bytes; shape and dtype in the X-Shape / X-Dtype headers."""
    pixels = pixels.astype(pixels.dtype.newbyteorder("<"), copy=False)
    response = HttpResponse(pixels.tobytes(order="C"), content_type="application/octet-stream")
    response["X-Shape"] = ",".join(str(n) for n in pixels.shape)
    response["X-Dtype"] = pixels.dtype.name
    response["Access-Control-Expose-Headers"] = "X-Shape, X-Dtype"
    return response


class PixelsApi(APIView):
    """Raw little-endian pixels of the slice, row-major; shape and dtype in the X-Shape / X-Dtype headers."""

    @extend_schema(
        responses={(200, "application/octet-stream"): OpenApiTypes.BINARY}, operation_id="cases_pixels"
    )
    def get(self, request, case_id: int):
        case, _ = _case_for(request, case_id)
        return _raw(array_open(case.image.pixels_path)[case.slice_index])


class VolumeApi(APIView):
    """The case's volume in 3D context: its axial, coronal and sagittal views (which array axis each plane is
    normal to, how many planes, how rows and columns are laid out, orientation markers from the direction
    cosines, the shown plane's pixel spacing in mm), where the case's slice lies, the markers of the editor's
    own slice view, and which slices are labelled. Anyone who may view the case may view its volume."""

    @extend_schema(responses=OpenApiTypes.OBJECT, operation_id="cases_volume")
    def get(self, request, case_id: int):
        case, roles = _case_for(request, case_id)
        return Response(volume_payload(case=case, user=request.user, roles=roles))


def _view_for(case, view: str):
    if view not in VIEWS:
        raise NotFound(f"no view {view!r}: choose from {', '.join(VIEWS)}")
    return volume_views(case.image)[view]


class VolumePlaneApi(APIView):
    """Raw pixels of plane `index` of a view of the case's volume, laid out as the volume payload says
    (little-endian, row-major; X-Shape / X-Dtype headers). 404 outside the view's planes."""

    @extend_schema(
        responses={(200, "application/octet-stream"): OpenApiTypes.BINARY}, operation_id="cases_volume_plane"
    )
    def get(self, request, case_id: int, view: str, index: int):
        case, _ = _case_for(request, case_id)
        spec = _view_for(case, view)
        if not 0 <= index < spec.count:
            raise NotFound(f"{view} plane {index} is outside 0..{spec.count - 1}")
        return _raw(view_plane(array_open(case.image.pixels_path), spec, index))


def _fresh(response: HttpResponse) -> HttpResponse:
    """A label that another revision may replace at any time: the browser asks again every time."""
    response["Cache-Control"] = "private, no-cache"
    return response


class VolumeLabelApi(APIView):
    """The labels the caller may see on plane `index` of a view of the case's volume (an 8-bit PNG laid
    out like the plane): a blind reader's own revisions, the current ones for every other role. On the
    acquired view, the label of that slice (404 when it has none; with `?layout=stored`, in the slice's
    stored layout, the editor's, e.g. to copy a neighbour's label); on a reformatted view, the labelled
    slices' rows across it (0 where a slice is unlabelled)."""

    @extend_schema(
        parameters=[OpenApiParameter("layout", str, enum=["view", "stored"], required=False)],
        responses={(200, "image/png"): OpenApiTypes.BINARY},
        operation_id="cases_volume_label",
    )
    def get(self, request, case_id: int, view: str, index: int):
        case, roles = _case_for(request, case_id)
        spec = _view_for(case, view)
        if not 0 <= index < spec.count:
            raise NotFound(f"{view} plane {index} is outside 0..{spec.count - 1}")
        if spec.normal != 0:
            plane = label_plane(image=case.image, view=spec, index=index, user=request.user, roles=roles)
            return _fresh(png_response(mask_to_png(plane)))
        label = slice_label(image=case.image, index=index, user=request.user, roles=roles)
        if label is None:
            raise NotFound("no label on this slice")
        mask = mask_from_png(bytes_load(label.mask_path))
        stored = request.query_params.get("layout") == "stored"
        return _fresh(png_response(mask_to_png(mask if stored else laid_out(mask, spec))))


class InterpolatedLabelApi(APIView):
    """A label for the case's slice interpolated from the nearest labelled slices the caller may see above
    and below it (shape-based interpolation, in the slice's stored layout; X-From-Slices names the two).
    404 without a labelled slice on each side."""

    @extend_schema(
        responses={(200, "image/png"): OpenApiTypes.BINARY}, operation_id="cases_volume_interpolated"
    )
    def get(self, request, case_id: int):
        case, roles = _case_for(request, case_id)
        result = interpolated_label(case=case, user=request.user, roles=roles)
        if result is None:
            raise NotFound("interpolation needs a labelled slice on each side of this one")
        mask, below, above = result
        response = _fresh(png_response(mask_to_png(mask)))
        response["X-From-Slices"] = f"{below},{above}"
        response["Access-Control-Expose-Headers"] = "X-From-Slices"
        return response


class AnnotationMaskApi(APIView):
    @extend_schema(responses={(200, "image/png"): OpenApiTypes.BINARY}, operation_id="annotations_mask_png")
    def get(self, request, annotation_id: int):
        annotation = Annotation.objects.select_related("case__project").filter(pk=annotation_id).first()
        roles = user_roles(request.user, annotation.case.project) if annotation else set()
        if (
            annotation is None
            or not roles
            or not annotation_visible(user=request.user, roles=roles, annotation=annotation)
        ):
            raise NotFound("annotation not found")
        return png_response(bytes_load(annotation.mask_path))
