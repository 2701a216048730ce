"""Flagged and skipped cases for data managers and admins, and returning a flagged case to the queue."""

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from annotations.selectors.images import case_get_for_user
from annotations.selectors.projects import project_get_for_user
from annotations.selectors.triage import flagged_and_skipped
from annotations.services.triage import case_return_to_queue
from hitl.core.permissions import Action, require


class TriageRowSerializer(serializers.Serializer):
    case = serializers.IntegerField()
    image_name = serializers.CharField()
    slice_index = serializers.IntegerField()
    reader = serializers.CharField()
    reason = serializers.CharField(help_text="the reader's words")
    at = serializers.DateTimeField()
    still_flagged = serializers.BooleanField()


class TriageOutputSerializer(serializers.Serializer):
    flagged = TriageRowSerializer(many=True, help_text="cases out of the queue, newest flag first")
    skipped = TriageRowSerializer(many=True, help_text="skipped readings, newest first")


class FlaggedSkippedApi(APIView):
    @extend_schema(responses=TriageOutputSerializer, operation_id="flagged_and_skipped")
    def get(self, request, project_id: int):
        project, roles = project_get_for_user(user=request.user, project_id=project_id)
        require(roles, Action.SET_READERS)
        return Response(TriageOutputSerializer(flagged_and_skipped(project=project)).data)


class ReturnToQueueApi(APIView):
    error_statuses = {"post": [409]}  # not flagged

    class OutputSerializer(serializers.Serializer):
        case = serializers.IntegerField(source="pk")
        flagged = serializers.SerializerMethodField()

        def get_flagged(self, case) -> bool:
            return case.flagged_at is not None

    @extend_schema(request=None, responses=OutputSerializer, operation_id="case_return_to_queue")
    def post(self, request, case_id: int):
        case, roles = case_get_for_user(user=request.user, case_id=case_id, annotations=False)
        require(roles, Action.SET_READERS)
        return Response(self.OutputSerializer(case_return_to_queue(case=case, actor=request.user)).data)
