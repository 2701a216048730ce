"""The editor's reads: one JSON payload per case, then binary pixels and PNG layers."""

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.exceptions import NotFound
from rest_framework.response import Response
from rest_framework.views import APIView

from annotations.apis.strict import StrictSerializer
from annotations.models import Annotation
from annotations.permissions import Action, require, user_roles
from annotations.selectors.editor import annotation_visible, editor_payload, require_case_access
from annotations.selectors.images import case_get_for_user
from annotations.storage import array_load, bytes_load
from workers.ml.explain_policy import ALL_METHODS, is_interactive
from workers.models import Explanation
from workers.selectors.modeling import case_ml_payload, explanation_brief
from workers.services.explain_on_demand import OUTCOMES, explanation_request


def _case_for(request, case_id: int):
    case, roles = case_get_for_user(user=request.user, case_id=case_id, annotations=False)
    require(roles, Action.VIEW)
    require_case_access(user=request.user, roles=roles, case=case)
    return case, roles


def _png(data: bytes) -> HttpResponse:
    response = HttpResponse(data, content_type="image/png")
    response["Cache-Control"] = "private, max-age=600"
    return response


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


class ProposalPngApi(APIView):
    layer = "mask_path"

    @extend_schema(responses={(200, "image/png"): OpenApiTypes.BINARY}, operation_id="cases_proposal_png")
    def get(self, request, case_id: int):
        case, _ = _case_for(request, case_id)
        proposal = case_ml_payload(case)["proposal"]
        if not proposal or not proposal.get(self.layer):
            raise NotFound("no proposal for this case yet")
        return _png(bytes_load(proposal[self.layer]))


class UncertaintyPngApi(ProposalPngApi):
    layer = "uncertainty_path"

    @extend_schema(responses={(200, "image/png"): OpenApiTypes.BINARY}, operation_id="cases_uncertainty_png")
    def get(self, request, case_id: int):
        return super().get(request, case_id)


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
        return _png(bytes_load(annotation.mask_path))


class ExplanationMapApi(APIView):
    @extend_schema(responses={(200, "image/png"): OpenApiTypes.BINARY}, operation_id="explanations_map_png")
    def get(self, request, explanation_id: int):
        explanation = Explanation.objects.select_related("case").filter(pk=explanation_id).first()
        if explanation is None:
            raise NotFound("explanation not found")
        _case_for(request, explanation.case_id)
        return _png(bytes_load(explanation.map_path))


class ExplanationRequestApi(APIView):
    """Ask for an explanation of the case by the active model. Interactive methods are computed in the
    request (201), expensive ones are queued (202) and appear in the editor payload when done; a map that
    already exists is returned as is (200)."""

    error_statuses = {"post": [409]}  # no model to explain with; a method the network cannot produce

    class InputSerializer(StrictSerializer):
        method = serializers.ChoiceField(choices=ALL_METHODS)

    class OutputSerializer(serializers.Serializer):
        status = serializers.ChoiceField(choices=OUTCOMES)
        method = serializers.CharField()
        interactive = serializers.BooleanField()
        explanation = serializers.DictField(allow_null=True)

    STATUS = {"ready": 200, "computed": 201, "queued": 202}

    @extend_schema(
        request=InputSerializer,
        responses={200: OutputSerializer, 201: OutputSerializer, 202: OutputSerializer},
        operation_id="cases_explanation_request",
    )
    def post(self, request, case_id: int):
        case, _ = _case_for(request, case_id)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        method = data.validated_data["method"]
        outcome, row = explanation_request(case=case, method=method, user=request.user)
        body = {
            "status": outcome,
            "method": method,
            "interactive": is_interactive(method),
            "explanation": explanation_brief(row, row.model_version_id) if row is not None else None,
        }
        return Response(self.OutputSerializer(body).data, status=self.STATUS[outcome])
