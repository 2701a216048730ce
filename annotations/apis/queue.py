"""The reader queue over HTTP: claim, heartbeat, skip, flag, release; and mask submission."""

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import PermissionDenied
from rest_framework.response import Response
from rest_framework.views import APIView

from annotations.models import AnnotationKind, Assignment, AssignmentStatus, Case, Role
from annotations.selectors.images import case_get_for_user, queue_head
from annotations.selectors.projects import project_get_for_user
from annotations.services import queue
from annotations.services.annotations import annotation_submit
from annotations.services.masks import mask_decode
from hitl.core.apis.query import query_params
from hitl.core.apis.strict import StrictSerializer
from hitl.core.permissions import Action, require
from hitl.core.types import User


# Declared fields rather than a ModelSerializer: it is built on every claim, and introspecting the model
# each time cost about as much CPU as the claim's own SQL.
class AssignmentOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    case = serializers.IntegerField(source="case_id")
    slot = serializers.IntegerField()
    status = serializers.ChoiceField(choices=AssignmentStatus.choices)
    claimed_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField()
    queue_reason = serializers.JSONField(help_text="why the case was chosen, at claim time")


class ClaimApi(APIView):
    error_statuses = {"post": [409]}  # a concurrent claim won

    @extend_schema(
        request=None, responses={200: AssignmentOutputSerializer, 204: None}, operation_id="queue_claim"
    )
    def post(self, request, project_id: int):
        project, roles = project_get_for_user(user=request.user, project_id=project_id)
        require(roles, Action.ANNOTATE)
        assignment = queue.case_claim_next(project=project, reader=request.user)
        if assignment is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response(AssignmentOutputSerializer(assignment).data)


class QueueHeadOutputSerializer(serializers.ModelSerializer):
    image_name = serializers.CharField(source="image.display_name")

    class Meta:
        model = Case
        fields = ["id", "image", "image_name", "slice_index", "priority", "queue_reason", "reads_taken"]


class QueueHeadApi(APIView):
    """What readers will open next, with why (strategy, score, rank, model version). Not for annotators:
    the order itself would bias blind reading."""

    class FilterSerializer(serializers.Serializer):
        limit = serializers.IntegerField(min_value=1, max_value=200, default=20)

    @extend_schema(
        parameters=[FilterSerializer],
        responses=QueueHeadOutputSerializer(many=True),
        operation_id="queue_head",
    )
    def get(self, request, project_id: int):
        project, roles = project_get_for_user(user=request.user, project_id=project_id)
        if not roles - {Role.ANNOTATOR}:
            raise PermissionDenied("the queue order is for ML engineers, data managers and admins")
        head = queue_head(project=project, limit=query_params(self.FilterSerializer, request)["limit"])
        return Response(QueueHeadOutputSerializer(head, many=True).data)


class ReasonSerializer(StrictSerializer):
    reason = serializers.CharField(
        max_length=500, help_text="why, in words (kept on the lease, never in the audit trail)"
    )


class _CaseLeaseApi(APIView):
    action_fn = None
    error_statuses = {"post": [409]}  # no lease, an expired one, a lease already ended
    InputSerializer: type[serializers.Serializer] | None = None  # the lease actions that need a reason

    def _run(self, request, case_id: int):
        case, roles = case_get_for_user(user=request.user, case_id=case_id, annotations=False)
        require(roles, Action.ANNOTATE)
        reason = ""
        if self.InputSerializer is not None:
            ser = self.InputSerializer(data=request.data)
            ser.is_valid(raise_exception=True)
            reason = ser.validated_data["reason"]
        assignment = self.perform(case=case, reader=request.user, reason=reason)
        return Response(AssignmentOutputSerializer(assignment).data)

    def perform(self, *, case: Case, reader: User, reason: str) -> Assignment:
        raise NotImplementedError


class HeartbeatApi(_CaseLeaseApi):
    @extend_schema(request=None, responses=AssignmentOutputSerializer, operation_id="lease_heartbeat")
    def post(self, request, case_id: int):
        return self._run(request, case_id)

    def perform(self, *, case: Case, reader: User, reason: str) -> Assignment:
        return queue.assignment_heartbeat(case=case, reader=reader)


class SkipApi(_CaseLeaseApi):
    InputSerializer = ReasonSerializer

    @extend_schema(request=ReasonSerializer, responses=AssignmentOutputSerializer, operation_id="case_skip")
    def post(self, request, case_id: int):
        return self._run(request, case_id)

    def perform(self, *, case: Case, reader: User, reason: str) -> Assignment:
        return queue.assignment_skip(case=case, reader=reader, reason=reason)


class FlagApi(_CaseLeaseApi):
    InputSerializer = ReasonSerializer

    @extend_schema(request=ReasonSerializer, responses=AssignmentOutputSerializer, operation_id="case_flag")
    def post(self, request, case_id: int):
        return self._run(request, case_id)

    def perform(self, *, case: Case, reader: User, reason: str) -> Assignment:
        return queue.assignment_flag(case=case, reader=reader, reason=reason)


class ReleaseApi(_CaseLeaseApi):
    @extend_schema(request=None, responses=AssignmentOutputSerializer, operation_id="lease_release")
    def post(self, request, case_id: int):
        return self._run(request, case_id)

    def perform(self, *, case: Case, reader: User, reason: str) -> Assignment:
        return queue.assignment_release(case=case, reader=reader)


class RevisionOutputSerializer(serializers.Serializer):
    """Declared, not a ModelSerializer: that one introspects the model on every submission (~2 ms)."""

    id = serializers.IntegerField(read_only=True)
    case = serializers.IntegerField(source="case_id")
    revision = serializers.IntegerField()
    kind = serializers.ChoiceField(choices=AnnotationKind.choices)
    author = serializers.IntegerField(source="author_id", allow_null=True)
    base = serializers.IntegerField(source="base_id", allow_null=True)
    label_counts = serializers.JSONField(help_text="{label value: pixel count}")
    time_spent_s = serializers.FloatField()
    proposal_model_version = serializers.IntegerField(source="proposal_model_version_id", allow_null=True)
    effort_dice = serializers.FloatField(allow_null=True)
    pixels_changed = serializers.IntegerField(allow_null=True)
    created_at = serializers.DateTimeField()


class SubmitApi(APIView):
    error_statuses = {"post": [409]}  # stale base revision, no lease

    class InputSerializer(StrictSerializer):
        mask = serializers.DictField(
            help_text='{"format": "png_base64", "data": ...} or {"format": "rle", ...}'
        )
        base_revision = serializers.IntegerField(allow_null=True, min_value=1)
        time_spent_s = serializers.FloatField(min_value=0, max_value=86400)
        proposal_model_version = serializers.IntegerField(allow_null=True, required=False, default=None)

    @extend_schema(
        request=InputSerializer, responses={201: RevisionOutputSerializer}, operation_id="annotations_submit"
    )
    def post(self, request, case_id: int):
        case, roles = case_get_for_user(user=request.user, case_id=case_id, annotations=False)
        require(roles, Action.ANNOTATE)
        ser = self.InputSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        data = ser.validated_data
        mask = mask_decode(data["mask"], shape=tuple(case.image.shape[1:3]))
        annotation = annotation_submit(
            case=case,
            reader=request.user,
            mask=mask,
            base_revision=data["base_revision"],
            time_spent_s=data["time_spent_s"],
            proposal_model_version_id=data["proposal_model_version"],
        )
        return Response(RevisionOutputSerializer(annotation).data, status=status.HTTP_201_CREATED)
