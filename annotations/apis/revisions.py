"""A reader's own submitted cases: the list ("my recent cases") and a new revision of one of them."""

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from annotations.apis.queue import RevisionOutputSerializer, SubmitApi
from annotations.selectors.images import case_get_for_user
from annotations.selectors.projects import project_get_for_user
from annotations.selectors.workspace import recent_cases
from annotations.services.annotations import annotation_revise
from annotations.services.masks import mask_decode
from hitl.core.apis.query import query_params
from hitl.core.permissions import Action, require


class RecentCaseOutputSerializer(serializers.Serializer):
    case = serializers.IntegerField()
    image_name = serializers.CharField()
    slice_index = serializers.IntegerField()
    submitted_at = serializers.DateTimeField()
    my_latest_revision = serializers.IntegerField(allow_null=True)
    flagged = serializers.BooleanField(help_text="flagged since: no longer revisable")


class MyCasesApi(APIView):
    """The cases you submitted in this project, newest first (reopen one to submit a new revision)."""

    class FilterSerializer(serializers.Serializer):
        limit = serializers.IntegerField(min_value=1, max_value=100, default=20)

    @extend_schema(
        parameters=[FilterSerializer],
        responses=RecentCaseOutputSerializer(many=True),
        operation_id="my_recent_cases",
    )
    def get(self, request, project_id: int):
        project, roles = project_get_for_user(user=request.user, project_id=project_id)
        require(roles, Action.ANNOTATE)
        limit = query_params(self.FilterSerializer, request)["limit"]
        rows = recent_cases(project=project, reader=request.user, limit=limit)
        return Response(RecentCaseOutputSerializer(rows, many=True).data)


class ReviseApi(APIView):
    """A new revision of a case you have submitted: no lease needed, the same body and checks as a
    submission (409 not_read when you have not submitted it, case_closed when flagged, stale_base)."""

    error_statuses = {"post": [409, 507]}  # 507: media storage full

    @extend_schema(
        request=SubmitApi.InputSerializer,
        responses={201: RevisionOutputSerializer},
        operation_id="annotations_revise",
    )
    def post(self, request, case_id: int):
        case, roles = case_get_for_user(user=request.user, case_id=case_id, annotations=False)
        require(roles, Action.ANNOTATE)
        ser = SubmitApi.InputSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        data = ser.validated_data
        annotation = annotation_revise(
            case=case,
            reader=request.user,
            mask=mask_decode(data["mask"], shape=tuple(case.image.shape[1:3])),
            base_revision=data["base_revision"],
            time_spent_s=data["time_spent_s"],
            proposal_model_version_id=data["proposal_model_version"],
        )
        return Response(RevisionOutputSerializer(annotation).data, status=status.HTTP_201_CREATED)
