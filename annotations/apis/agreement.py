"""Inter-observer agreement over HTTP: project statistics, one case's agreement, CSV download.

Everyone in the project sees project-level agreement; annotators see only their own per-reader numbers and
only the cases the queue gave them (blind reading); ML engineers, data managers and admins see everything."""

import csv
import io

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.exceptions import NotFound
from rest_framework.response import Response
from rest_framework.views import APIView

from annotations.apis.cases import AnnotationOutputSerializer
from annotations.selectors.agreement import (
    agreement_csv_rows,
    agreement_for_case,
    project_stats,
    reader_rows_visible,
    reader_stats,
    sees_all_readers,
)
from annotations.selectors.editor import require_case_access
from annotations.selectors.images import case_get_for_user
from annotations.selectors.projects import project_get_for_user
from annotations.services.adjudication import case_adjudicate
from hitl.core.apis.query import query_params
from hitl.core.apis.strict import StrictSerializer
from hitl.core.permissions import Action, require


class ReaderRowSerializer(serializers.Serializer):
    reader_id = serializers.IntegerField()
    reader = serializers.CharField(source="reader.username")
    annotation_id = serializers.IntegerField()
    dice_vs_consensus = serializers.FloatField()
    hd95_vs_consensus = serializers.FloatField()
    sensitivity = serializers.FloatField()
    specificity = serializers.FloatField()
    time_spent_s = serializers.FloatField()
    read_at = serializers.DateTimeField()


class AgreementSummarySerializer(serializers.Serializer):
    id = serializers.IntegerField()
    case_id = serializers.IntegerField()
    image_name = serializers.CharField(source="case.image.display_name")
    slice_index = serializers.IntegerField(source="case.slice_index")
    n_readers = serializers.IntegerField()
    mean_pairwise_dice = serializers.FloatField()
    mean_pairwise_hd95 = serializers.FloatField()
    kappa = serializers.FloatField()
    kappa_method = serializers.CharField()
    consensus_annotation_id = serializers.IntegerField(source="consensus_id")
    consensus_revision = serializers.IntegerField(source="consensus.revision")
    model_version_id = serializers.IntegerField(allow_null=True)
    model_dice_vs_consensus = serializers.FloatField(allow_null=True)
    model_within_spread = serializers.BooleanField(allow_null=True)
    computed_at = serializers.DateTimeField()
    compare_url = serializers.SerializerMethodField()

    def get_compare_url(self, obj) -> str:
        return f"/projects/{obj.project_id}/agreement/cases/{obj.case_id}/"


class CaseAgreementApi(APIView):
    class OutputSerializer(AgreementSummarySerializer):
        reader_annotation_ids = serializers.ListField(child=serializers.IntegerField())
        pairs = serializers.JSONField(source="metrics.pairs", help_text="reader_a/b are indices, not users")
        staple_sensitivity = serializers.ListField(
            child=serializers.FloatField(), source="metrics.staple_sensitivity"
        )
        staple_specificity = serializers.ListField(
            child=serializers.FloatField(), source="metrics.staple_specificity"
        )
        spacing = serializers.ListField(child=serializers.FloatField(), source="metrics.spacing")
        seconds = serializers.FloatField()
        readers = serializers.SerializerMethodField()

        def get_readers(self, obj) -> list[dict]:
            return list(ReaderRowSerializer(self.context["readers"], many=True).data)

    @extend_schema(responses=OutputSerializer, operation_id="cases_agreement")
    def get(self, request, case_id: int):
        case, roles = case_get_for_user(user=request.user, case_id=case_id)
        require(roles, Action.VIEW)
        require_case_access(user=request.user, roles=roles, case=case)
        agreement = agreement_for_case(case=case)
        if agreement is None:
            raise NotFound("no agreement for this case yet (it needs two or more readers)")
        readers = reader_rows_visible(agreement=agreement, user=request.user, roles=roles)
        if not sees_all_readers(roles):
            # Blind reading: STAPLE's per-reader numbers are listed by reader index; keep only the caller's.
            agreement.metrics = {
                **agreement.metrics,
                "staple_sensitivity": [r.sensitivity for r in readers],
                "staple_specificity": [r.specificity for r in readers],
            }
            agreement.reader_annotation_ids = [r.annotation_id for r in readers]
        return Response(self.OutputSerializer(agreement, context={"readers": readers}).data)


class ReaderStatsSerializer(serializers.Serializer):
    reader_id = serializers.IntegerField()
    username = serializers.CharField()
    cases_read = serializers.IntegerField()
    median_time_s = serializers.FloatField(allow_null=True)
    dice_cases = serializers.IntegerField()
    mean_dice = serializers.FloatField(allow_null=True)
    dice_ci = serializers.ListField(
        child=serializers.FloatField(), allow_null=True, help_text="bootstrap 95% CI of the mean"
    )
    mean_sensitivity = serializers.FloatField(allow_null=True)
    mean_specificity = serializers.FloatField(allow_null=True)
    trend = serializers.JSONField(help_text="[{read_at, dice, rolling}] oldest first")


class ProjectAgreementApi(APIView):
    class OutputSerializer(serializers.Serializer):
        class ProjectSerializer(serializers.Serializer):
            cases_with_agreement = serializers.IntegerField()
            pairwise_dice = serializers.ListField(child=serializers.FloatField())
            dice_histogram = serializers.ListField(child=serializers.IntegerField())
            mean_pairwise_dice = serializers.FloatField(allow_null=True)
            median_pairwise_dice = serializers.FloatField(allow_null=True)
            mean_kappa = serializers.FloatField(allow_null=True)
            model_cases = serializers.IntegerField()
            model_within_spread = serializers.IntegerField()
            mean_model_dice = serializers.FloatField(allow_null=True)
            mean_reader_dice = serializers.FloatField(allow_null=True)
            disputed = AgreementSummarySerializer(many=True)

        project = ProjectSerializer()
        readers = ReaderStatsSerializer(many=True)
        sees_all_readers = serializers.BooleanField()

    @extend_schema(responses=OutputSerializer, operation_id="projects_agreement")
    def get(self, request, project_id: int):
        project, roles = project_get_for_user(user=request.user, project_id=project_id)
        require(roles, Action.VIEW)
        all_readers = sees_all_readers(roles)
        data = {
            "project": project_stats(project=project),
            "readers": reader_stats(project=project, reader_ids=None if all_readers else {request.user.pk}),
            "sees_all_readers": all_readers,
        }
        return Response(self.OutputSerializer(data).data)


def csv_response(rows: list[list], filename: str) -> HttpResponse:
    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    response = HttpResponse(buf.getvalue(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


class AgreementCsvApi(APIView):
    class FilterSerializer(serializers.Serializer):
        kind = serializers.ChoiceField(choices=["cases", "readers"], default="cases")

    @extend_schema(
        parameters=[FilterSerializer],
        responses={(200, "text/csv"): OpenApiTypes.STR},
        operation_id="projects_agreement_csv",
    )
    def get(self, request, project_id: int):
        project, roles = project_get_for_user(user=request.user, project_id=project_id)
        require(roles, Action.VIEW)
        kind = query_params(self.FilterSerializer, request)["kind"]
        readers = None if sees_all_readers(roles) else {request.user.pk}
        rows = agreement_csv_rows(project=project, kind=kind, reader_ids=readers)
        return csv_response(rows, f"project-{project.pk}-agreement-{kind}.csv")


class AdjudicateApi(APIView):
    """Admins: settle a multi-read case by adopting one of its reader or consensus revisions (by number) as
    a new revision of kind `adjudicated`; training and consensus exports prefer it."""

    error_statuses = {"post": [409, 507]}  # no such reader/consensus revision; storage full

    class InputSerializer(StrictSerializer):
        revision = serializers.IntegerField(min_value=1, help_text="the revision to adopt")

    @extend_schema(
        request=InputSerializer, responses={201: AnnotationOutputSerializer}, operation_id="case_adjudicate"
    )
    def post(self, request, case_id: int):
        case, roles = case_get_for_user(user=request.user, case_id=case_id, annotations=False)
        require(roles, Action.ADJUDICATE)
        ser = self.InputSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        annotation = case_adjudicate(
            case=case, actor=request.user, source_revision=ser.validated_data["revision"]
        )
        return Response(AnnotationOutputSerializer(annotation).data, status=201)
