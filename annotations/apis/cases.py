from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from annotations.models import Annotation, Case, CaseSplit
from annotations.render import slice_png
from annotations.selectors.editor import require_case_access
from annotations.selectors.images import case_get_for_user, case_list
from annotations.selectors.projects import project_get_for_user
from hitl.core.apis.pagination import Pagination, paginated_response
from hitl.core.apis.query import query_params
from hitl.core.permissions import Action, reads_blind, require
from hitl.core.storage import array_open


class AnnotationOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = Annotation
        fields = ["id", "revision", "kind", "author", "base", "label_counts", "time_spent_s", "created_at"]


class CaseOutputSerializer(serializers.ModelSerializer):
    image_name = serializers.CharField(source="image.display_name")
    modality = serializers.CharField(source="image.modality")
    current_revision = serializers.IntegerField(
        source="current_annotation.revision", allow_null=True, default=None
    )

    class Meta:
        model = Case
        fields = [
            "id",
            "image",
            "image_name",
            "modality",
            "slice_index",
            "split",
            "current_revision",
            "created_at",
        ]


class CaseDetailOutputSerializer(CaseOutputSerializer):
    annotations = AnnotationOutputSerializer(many=True)

    class Meta(CaseOutputSerializer.Meta):
        fields = [*CaseOutputSerializer.Meta.fields, "annotations"]


class CaseListApi(APIView):
    pagination_class = Pagination

    class FilterSerializer(serializers.Serializer):
        split = serializers.ChoiceField(choices=CaseSplit.choices, required=False)
        image = serializers.IntegerField(min_value=1, max_value=2**63 - 1, required=False)

    @extend_schema(
        parameters=[FilterSerializer], responses=CaseOutputSerializer(many=True), operation_id="cases_list"
    )
    def get(self, request, project_id: int):
        project, roles = project_get_for_user(user=request.user, project_id=project_id)
        require(roles, Action.VIEW)
        params = query_params(self.FilterSerializer, request)
        qs = case_list(
            project=project,
            split=params.get("split"),
            image_id=params.get("image"),
            reader=request.user if reads_blind(roles) else None,
        )
        return paginated_response(
            request=request,
            view=self,
            queryset=qs,
            serialize=lambda page: CaseOutputSerializer(page, many=True).data,
        )


class CaseDetailApi(APIView):
    @extend_schema(responses=CaseDetailOutputSerializer, operation_id="cases_retrieve")
    def get(self, request, case_id: int):
        case, roles = case_get_for_user(user=request.user, case_id=case_id)
        require(roles, Action.VIEW)
        require_case_access(user=request.user, roles=roles, case=case)
        data = CaseDetailOutputSerializer(case).data
        if reads_blind(roles):  # only their own revisions
            data["annotations"] = [a for a in data["annotations"] if a["author"] == request.user.pk]
        return Response(data)


class CaseThumbnailApi(APIView):
    @extend_schema(responses={(200, "image/png"): OpenApiTypes.BINARY}, operation_id="cases_thumbnail")
    def get(self, request, case_id: int):
        case, roles = case_get_for_user(user=request.user, case_id=case_id, annotations=False)
        require(roles, Action.VIEW)
        require_case_access(user=request.user, roles=roles, case=case)
        pixels = array_open(case.image.pixels_path)[case.slice_index]
        stats = case.image.stats or {}
        window = None
        if "p0_5" in stats and pixels.ndim == 2:
            window = ((stats["p0_5"] + stats["p99_5"]) / 2, max(stats["p99_5"] - stats["p0_5"], 1e-6))
        response = HttpResponse(slice_png(pixels, window=window), content_type="image/png")
        response["Cache-Control"] = "private, max-age=3600"
        return response
