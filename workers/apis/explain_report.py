"""Explanation quality reports of a project's active model on its own reference-labelled cases. Everyone in
the project may read them; starting one needs Action.TRAIN (ML engineers, admins)."""

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import exceptions, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from annotations.selectors.projects import project_get_for_user
from hitl.core.apis.pagination import Pagination, paginated_response
from hitl.core.apis.strict import DistinctListField, StrictSerializer
from hitl.core.permissions import Action, require
from hitl.core.storage import bytes_load
from workers.models import ExplanationReport
from workers.selectors.explain_report import explanation_report_get_for_user, explanation_report_list
from workers.selectors.waiting import waiting_for
from workers.services.explain_report import (
    KNOWN_METHODS,
    MAX_CASES,
    explanation_report_cancel,
    explanation_report_start,
)


class ExplanationReportOutputSerializer(serializers.ModelSerializer):
    waiting_for = serializers.SerializerMethodField(
        help_text="while queued: why it has not started (no worker for its queue, or what the workers are busy with)"
    )
    requested_by = serializers.CharField(source="requested_by.username", allow_null=True, default=None)
    model_version_number = serializers.IntegerField(source="model_version.number")
    model_version_state = serializers.CharField(source="model_version.state")
    cases = serializers.SerializerMethodField()
    plot_url = serializers.SerializerMethodField()

    class Meta:
        model = ExplanationReport
        fields = [
            "id",
            "project",
            "status",
            "progress",
            "waiting_for",
            "model_version",
            "model_version_number",
            "model_version_state",
            "requested_by",
            "methods",
            "cases",
            "error",
            "created_at",
            "started_at",
            "finished_at",
            "plot_url",
        ]

    def get_cases(self, report: ExplanationReport) -> int:
        return len(report.case_ids)

    def get_plot_url(self, report: ExplanationReport) -> str | None:
        return f"/api/v1/explanation-reports/{report.pk}/plot.png" if report.plot_path else None

    def get_waiting_for(self, report: ExplanationReport) -> str | None:
        return waiting_for("explanation report", report)


class ExplanationReportDetailOutputSerializer(ExplanationReportOutputSerializer):
    class Meta(ExplanationReportOutputSerializer.Meta):
        fields = [*ExplanationReportOutputSerializer.Meta.fields, "case_ids", "result"]


class ExplanationReportListApi(APIView):
    pagination_class = Pagination
    error_statuses = {"post": [409]}  # no active model; a report already open

    class InputSerializer(StrictSerializer):
        methods = DistinctListField(
            child=serializers.ChoiceField(choices=KNOWN_METHODS),
            required=False,
            allow_empty=False,
            max_length=len(KNOWN_METHODS),
            help_text="default: every catalogue method the active model's architecture allows",
        )
        max_cases = serializers.IntegerField(min_value=1, max_value=MAX_CASES, default=8)

    @extend_schema(
        responses=ExplanationReportOutputSerializer(many=True), operation_id="explanation_reports_list"
    )
    def get(self, request, project_id: int):
        project, roles = project_get_for_user(user=request.user, project_id=project_id)
        require(roles, Action.VIEW)
        return paginated_response(
            request=request,
            view=self,
            queryset=explanation_report_list(project=project),
            serialize=lambda page: ExplanationReportOutputSerializer(page, many=True).data,
        )

    @extend_schema(
        request=InputSerializer,
        responses={201: ExplanationReportDetailOutputSerializer},
        operation_id="explanation_reports_start",
    )
    def post(self, request, project_id: int):
        project, roles = project_get_for_user(user=request.user, project_id=project_id)
        require(roles, Action.TRAIN)
        ser = self.InputSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        report = explanation_report_start(
            project=project,
            requested_by=request.user,
            methods=ser.validated_data.get("methods"),
            max_cases=ser.validated_data["max_cases"],
        )
        return Response(ExplanationReportDetailOutputSerializer(report).data, status=status.HTTP_201_CREATED)


class ExplanationReportDetailApi(APIView):
    @extend_schema(
        responses=ExplanationReportDetailOutputSerializer, operation_id="explanation_reports_retrieve"
    )
    def get(self, request, report_id: int):
        report, roles = explanation_report_get_for_user(user=request.user, report_id=report_id)
        require(roles, Action.VIEW)
        return Response(ExplanationReportDetailOutputSerializer(report).data)


class ExplanationReportCancelApi(APIView):
    """Stop a queued or running report (ML engineers, admins): a running one stops after the row it is
    computing; what it computed so far is dropped with it."""

    error_statuses = {"post": [409]}  # the report has already ended

    @extend_schema(
        request=None,
        responses=ExplanationReportDetailOutputSerializer,
        operation_id="explanation_reports_cancel",
    )
    def post(self, request, report_id: int):
        report, roles = explanation_report_get_for_user(user=request.user, report_id=report_id)
        require(roles, Action.TRAIN)
        report = explanation_report_cancel(report=report, actor=request.user)
        return Response(ExplanationReportDetailOutputSerializer(report).data)


class ExplanationReportPlotApi(APIView):
    @extend_schema(
        responses={(200, "image/png"): OpenApiResponse(OpenApiTypes.BINARY, description="the report's plot")},
        operation_id="explanation_reports_plot",
    )
    def get(self, request, report_id: int):
        report, roles = explanation_report_get_for_user(user=request.user, report_id=report_id)
        require(roles, Action.VIEW)
        if not report.plot_path:
            raise exceptions.NotFound("the report has no plot yet")
        response = HttpResponse(bytes_load(report.plot_path), content_type="image/png")
        response["Cache-Control"] = "private, max-age=3600"  # a report's plot never changes
        return response
