"""The reader queue over HTTP: claim, heartbeat, skip, flag, release; and mask submission."""

import re

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.exceptions import PermissionDenied, ValidationError
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
from workers.selectors.registry import active_version_number


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
    held_elsewhere = serializers.BooleanField(
        help_text="the lease belongs to another editor tab of yours (X-Editor-Tab): open read-only, or take over"
    )


class HeartbeatOutputSerializer(AssignmentOutputSerializer):
    active_model_version = serializers.IntegerField(
        allow_null=True,
        help_text="the number of the project's active model version now (an open editor reloads its layers "
        "when it changes)",
    )


_TAB = re.compile(r"[A-Za-z0-9_-]{1,64}")
TAB_HEADER = OpenApiParameter(
    "X-Editor-Tab",
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    required=False,
    pattern=r"^[A-Za-z0-9_-]{1,64}$",
    description="An editor tab's own id (1-64 of A-Z a-z 0-9 _ -): a lease belongs to the tab that claimed it; "
    "another tab gets 409 lease_moved until it takes the case over. API clients may omit it.",
)


def editor_tab(request) -> str:
    """The X-Editor-Tab header ("" when absent); 400 when malformed (empty included)."""
    tab = request.headers.get("X-Editor-Tab")
    if tab is None:
        return ""
    if not _TAB.fullmatch(tab):
        raise ValidationError({"X-Editor-Tab": ["1-64 characters of A-Z a-z 0-9 _ -"]})
    return tab


def assignment_out(assignment: Assignment, tab: str, out=AssignmentOutputSerializer) -> dict:
    assignment.held_elsewhere = queue.held_elsewhere(assignment, tab)  # type: ignore[attr-defined]
    if out is HeartbeatOutputSerializer:  # one query, on the heartbeat only (never on the hot claim path)
        assignment.active_model_version = active_version_number(project_id=assignment.project_id)  # type: ignore[attr-defined]
    return out(assignment).data


class ClaimApi(APIView):
    error_statuses = {"post": [409]}  # a concurrent claim won

    @extend_schema(
        request=None,
        parameters=[TAB_HEADER],
        responses={200: AssignmentOutputSerializer, 204: None},
        operation_id="queue_claim",
    )
    def post(self, request, project_id: int):
        project, roles = project_get_for_user(user=request.user, project_id=project_id)
        require(roles, Action.ANNOTATE)
        tab = editor_tab(request)
        assignment = queue.case_claim_next(project=project, reader=request.user, tab=tab)
        if assignment is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        queue.proposal_soon(project=project, case_id=assignment.case_id)
        return Response(assignment_out(assignment, tab))


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
    # no lease, an expired one, a lease already ended, one another tab holds (lease_moved)
    error_statuses = {"post": [409]}
    InputSerializer: type[serializers.Serializer] | None = None  # the lease actions that need a reason
    OutputSerializer: type[serializers.Serializer] = AssignmentOutputSerializer

    def _run(self, request, case_id: int):
        case, roles = case_get_for_user(user=request.user, case_id=case_id, annotations=False)
        require(roles, Action.ANNOTATE)
        tab = editor_tab(request)
        reason = ""
        if self.InputSerializer is not None:
            ser = self.InputSerializer(data=request.data)
            ser.is_valid(raise_exception=True)
            reason = ser.validated_data["reason"]
        assignment = self.perform(case=case, reader=request.user, reason=reason, tab=tab)
        return Response(assignment_out(assignment, tab, self.OutputSerializer))

    def perform(self, *, case: Case, reader: User, reason: str, tab: str) -> Assignment:
        raise NotImplementedError


def _lease_schema(operation_id: str, request=None):
    return extend_schema(
        request=request,
        parameters=[TAB_HEADER],
        responses=AssignmentOutputSerializer,
        operation_id=operation_id,
    )


class HeartbeatApi(_CaseLeaseApi):
    OutputSerializer = HeartbeatOutputSerializer

    @extend_schema(
        request=None,
        parameters=[TAB_HEADER],
        responses=HeartbeatOutputSerializer,
        operation_id="lease_heartbeat",
    )
    def post(self, request, case_id: int):
        return self._run(request, case_id)

    def perform(self, *, case: Case, reader: User, reason: str, tab: str) -> Assignment:
        return queue.assignment_heartbeat(case=case, reader=reader, tab=tab)


class SkipApi(_CaseLeaseApi):
    InputSerializer = ReasonSerializer

    @_lease_schema("case_skip", ReasonSerializer)
    def post(self, request, case_id: int):
        return self._run(request, case_id)

    def perform(self, *, case: Case, reader: User, reason: str, tab: str) -> Assignment:
        return queue.assignment_skip(case=case, reader=reader, reason=reason, tab=tab)


class FlagApi(_CaseLeaseApi):
    InputSerializer = ReasonSerializer

    @_lease_schema("case_flag", ReasonSerializer)
    def post(self, request, case_id: int):
        return self._run(request, case_id)

    def perform(self, *, case: Case, reader: User, reason: str, tab: str) -> Assignment:
        return queue.assignment_flag(case=case, reader=reader, reason=reason, tab=tab)


class ReleaseApi(_CaseLeaseApi):
    @_lease_schema("lease_release")
    def post(self, request, case_id: int):
        return self._run(request, case_id)

    def perform(self, *, case: Case, reader: User, reason: str, tab: str) -> Assignment:
        return queue.assignment_release(case=case, reader=reader, tab=tab)


class TakeOverApi(_CaseLeaseApi):
    """Move your lease on this case to the calling editor tab (X-Editor-Tab required)."""

    @_lease_schema("lease_take_over")
    def post(self, request, case_id: int):
        return self._run(request, case_id)

    def perform(self, *, case: Case, reader: User, reason: str, tab: str) -> Assignment:
        return queue.assignment_take_over(case=case, reader=reader, tab=tab)


class ReclaimApi(_CaseLeaseApi):
    """A new lease on this case after yours lapsed (expired or released), while the case still has a free
    reading slot and you have not submitted, skipped or flagged it (409 case_taken, already_read,
    case_closed, lease_elsewhere, never_held otherwise)."""

    @_lease_schema("lease_reclaim")
    def post(self, request, case_id: int):
        return self._run(request, case_id)

    def perform(self, *, case: Case, reader: User, reason: str, tab: str) -> Assignment:
        return queue.case_reclaim(case=case, reader=reader, tab=tab)


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


# The two mask encodings (annotations.services.masks.mask_decode), so that a client written from the schema
# knows them: a lossless 8-bit PNG in base64, or row-major runs of label values.
MASK_SCHEMA = {
    "oneOf": [
        {
            "type": "object",
            "properties": {"format": {"type": "string", "enum": ["png_base64"]}, "data": {"type": "string"}},
            "required": ["format", "data"],
        },
        {
            "type": "object",
            "properties": {
                "format": {"type": "string", "enum": ["rle"]},
                "size": {
                    "type": "array",
                    "items": {"type": "integer", "minimum": 1},
                    "minItems": 2,
                    "maxItems": 2,
                },
                "values": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 255}},
                "lengths": {"type": "array", "items": {"type": "integer", "minimum": 0}},
            },
            "required": ["format", "size", "values", "lengths"],
        },
    ]
}


@extend_schema_field(MASK_SCHEMA)
class MaskField(serializers.DictField):
    """A mask in one of the MASK_SCHEMA encodings (decoded and checked against the image by mask_decode)."""


class SubmitApi(APIView):
    error_statuses = {"post": [409, 507]}  # stale base revision, no lease; storage full

    class InputSerializer(StrictSerializer):
        mask = MaskField(help_text='{"format": "png_base64", "data": ...} or {"format": "rle", ...}')
        base_revision = serializers.IntegerField(allow_null=True, min_value=1)
        time_spent_s = serializers.FloatField(min_value=0, max_value=86400)
        proposal_model_version = serializers.IntegerField(allow_null=True, required=False, default=None)

    @extend_schema(
        request=InputSerializer,
        parameters=[TAB_HEADER],
        responses={201: RevisionOutputSerializer},
        operation_id="annotations_submit",
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
            tab=editor_tab(request),
        )
        return Response(RevisionOutputSerializer(annotation).data, status=status.HTTP_201_CREATED)
