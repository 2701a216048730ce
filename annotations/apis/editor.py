"""The editor's reads: one JSON payload per case, then binary pixels and PNG layers."""

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework.exceptions import NotFound
from rest_framework.response import Response
from rest_framework.views import APIView

from annotations.models import Annotation
from annotations.selectors.editor import annotation_visible, case_get_for_viewer, editor_payload
from hitl.core.apis.responses import png_response
from hitl.core.permissions import user_roles
from hitl.core.storage import array_load, bytes_load


def _case_for(request, case_id: int):
    return case_get_for_viewer(user=request.user, case_id=case_id)


class EditorPayloadApi(APIView):
    @extend_schema(responses=OpenApiTypes.OBJECT, operation_id="cases_editor_payload")
    def get(self, request, case_id: int):
        case, roles = _case_for(request, case_id)
        return Response(editor_payload(case=case, user=request.user, roles=roles))


class PixelsApi(APIView):
    """Raw little-endian pixels of the slice, row-major; shape and dtype in the X-Shape / X-Dtype headers."""

    @extend_schema(
        responses={(200, "application/octet-stream"): OpenApiTypes.BINARY}, operation_id="cases_pixels"
    )
    def get(self, request, case_id: int):
        case, _ = _case_for(request, case_id)
        pixels = array_load(case.image.pixels_path)[case.slice_index]
        pixels = pixels.astype(pixels.dtype.newbyteorder("<"), copy=False)
        response = HttpResponse(pixels.tobytes(order="C"), content_type="application/octet-stream")
        response["X-Shape"] = ",".join(str(n) for n in pixels.shape)
        response["X-Dtype"] = pixels.dtype.name
        response["Access-Control-Expose-Headers"] = "X-Shape, X-Dtype"
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
