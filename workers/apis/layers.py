"""The model's layers of a case in the editor: its proposal and uncertainty map, explanation maps, and a
reader's request for an explanation the pipeline has not made yet."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.exceptions import NotFound
from rest_framework.response import Response
from rest_framework.views import APIView

from annotations.selectors.editor import case_get_for_viewer
from hitl.core.apis.query import query_params
from hitl.core.apis.responses import png_response
from hitl.core.apis.strict import StrictSerializer
from hitl.core.storage import bytes_load
from workers.ml.explain.policy import ALL_METHODS, is_interactive
from workers.models import Explanation
from workers.selectors.registry import case_ml_payload, explanation_brief, prediction_layer_path
from workers.services.explain_on_demand import OUTCOMES, explanation_request


def _case_for(request, case_id: int):
    return case_get_for_viewer(user=request.user, case_id=case_id)


class ProposalPngApi(APIView):
    """The case's proposal layer: of the version named by `version` (the editor payload's URLs name it, so
    a browser never shows a cached layer of another version), else the active version's (or the newest)."""

    layer = "mask_path"

    class FilterSerializer(serializers.Serializer):
        version = serializers.IntegerField(min_value=1, required=False, help_text="a model version id")

    @extend_schema(
        parameters=[FilterSerializer],
        responses={(200, "image/png"): OpenApiTypes.BINARY},
        operation_id="cases_proposal_png",
    )
    def get(self, request, case_id: int):
        case, _ = _case_for(request, case_id)
        version = query_params(self.FilterSerializer, request).get("version")
        if version is not None:
            path = prediction_layer_path(case=case, version_id=version, layer=self.layer)
        else:
            proposal = case_ml_payload(case)["proposal"]
            path = proposal.get(self.layer) if proposal else None
        if not path:
            raise NotFound("no proposal for this case yet")
        return png_response(bytes_load(path))


class UncertaintyPngApi(ProposalPngApi):
    layer = "uncertainty_path"

    @extend_schema(
        parameters=[ProposalPngApi.FilterSerializer],
        responses={(200, "image/png"): OpenApiTypes.BINARY},
        operation_id="cases_uncertainty_png",
    )
    def get(self, request, case_id: int):
        return super().get(request, case_id)


class ExplanationMapApi(APIView):
    @extend_schema(responses={(200, "image/png"): OpenApiTypes.BINARY}, operation_id="explanations_map_png")
    def get(self, request, explanation_id: int):
        explanation = Explanation.objects.select_related("case").filter(pk=explanation_id).first()
        if explanation is None:
            raise NotFound("explanation not found")
        _case_for(request, explanation.case_id)
        return png_response(bytes_load(explanation.map_path))


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
