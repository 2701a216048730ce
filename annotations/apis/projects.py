from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import PermissionDenied
from rest_framework.response import Response
from rest_framework.views import APIView

from annotations.models import LabelPolicy, Modality, Project, UnitScore
from annotations.selectors.projects import project_get_for_user, project_list_for_user
from annotations.services.projects import project_create, project_update
from hitl.core.apis.pagination import Pagination, paginated_response
from hitl.core.apis.strict import StrictSerializer
from hitl.core.permissions import Action, require


class LabelClassSerializer(StrictSerializer):
    value = serializers.IntegerField(min_value=1, max_value=255)
    name = serializers.CharField(max_length=64)
    color = serializers.RegexField(r"^#[0-9a-fA-F]{6}$")


class ProjectOutputSerializer(serializers.ModelSerializer):
    label_classes = LabelClassSerializer(many=True)
    roles = serializers.SerializerMethodField()

    class Meta:
        model = Project
        fields = [
            "id",
            "name",
            "description",
            "modality",
            "label_classes",
            "readers_per_case",
            "multi_read_share",
            "multi_read_readers",
            "routing_share",
            "routing_readers",
            "reading_seed",
            "label_policy",
            "unit_slices",
            "unit_score",
            "created_at",
            "roles",
        ]

    def get_roles(self, obj) -> list[str]:
        return sorted(self.context.get("roles", {}).get(obj.pk, []))


# The ML settings left the project for their own resource (workers: /projects/{id}/training-settings); a
# client that still sends them gets a 400 saying where they went rather than having them silently ignored.
MOVED_TO_TRAINING_SETTINGS = ("query_strategy", "auto_retrain_every", "gating_tolerance", "training_config")


class _ProjectInput(StrictSerializer):
    def validate(self, attrs: dict) -> dict:
        sent = self.initial_data if isinstance(self.initial_data, dict) else {}
        moved = {
            k: ["set this on /api/v1/projects/{id}/training-settings"]
            for k in MOVED_TO_TRAINING_SETTINGS
            if k in sent
        }
        if moved:
            raise serializers.ValidationError(moved)
        return attrs


class ProjectListApi(APIView):
    pagination_class = Pagination

    class InputSerializer(_ProjectInput):
        name = serializers.CharField(max_length=200)
        description = serializers.CharField(required=False, allow_blank=True, default="")
        modality = serializers.ChoiceField(choices=Modality.choices, default=Modality.OT)
        label_classes = LabelClassSerializer(many=True, allow_empty=False)
        readers_per_case = serializers.IntegerField(min_value=1, max_value=10, default=1)

    @extend_schema(responses=ProjectOutputSerializer(many=True), operation_id="projects_list")
    def get(self, request):
        projects = project_list_for_user(user=request.user)
        roles: dict[int, set[str]] = {}
        for m in request.user.memberships.all():
            roles.setdefault(m.project_id, set()).add(m.role)
        return paginated_response(
            request=request,
            view=self,
            queryset=projects,
            serialize=lambda page: ProjectOutputSerializer(page, many=True, context={"roles": roles}).data,
        )

    @extend_schema(
        request=InputSerializer, responses={201: ProjectOutputSerializer}, operation_id="projects_create"
    )
    def post(self, request):
        if not request.user.is_staff:
            raise PermissionDenied("only site administrators create projects")
        ser = self.InputSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        project = project_create(creator=request.user, **ser.validated_data)
        out = ProjectOutputSerializer(project, context={"roles": {project.pk: {"admin"}}})
        return Response(out.data, status=status.HTTP_201_CREATED)


class ProjectDetailApi(APIView):
    class InputSerializer(_ProjectInput):
        name = serializers.CharField(max_length=200, required=False)
        description = serializers.CharField(required=False, allow_blank=True)
        modality = serializers.ChoiceField(choices=Modality.choices, required=False)
        label_classes = LabelClassSerializer(
            many=True, allow_empty=False, required=False, help_text="label values must be unique"
        )
        readers_per_case = serializers.IntegerField(min_value=1, max_value=10, required=False)
        multi_read_share = serializers.FloatField(
            min_value=0, max_value=1, required=False, help_text="share of cases read by multi_read_readers"
        )
        multi_read_readers = serializers.IntegerField(min_value=1, max_value=10, required=False)
        routing_share = serializers.FloatField(
            min_value=0, max_value=1, required=False, help_text="most uncertain share routed to more readers"
        )
        routing_readers = serializers.IntegerField(min_value=1, max_value=10, required=False)
        reading_seed = serializers.IntegerField(min_value=0, max_value=2**31 - 1, required=False)
        label_policy = serializers.ChoiceField(choices=LabelPolicy.choices, required=False)
        unit_slices = serializers.IntegerField(
            min_value=0,
            max_value=64,
            required=False,
            help_text="unit of work on volumes: 1 = a slice, k > 1 = slabs of k slices, 0 = the whole volume",
        )
        unit_score = serializers.ChoiceField(
            choices=UnitScore.choices,
            required=False,
            help_text="a unit's queue score from its slices' scores",
        )

    @extend_schema(responses=ProjectOutputSerializer, operation_id="projects_retrieve")
    def get(self, request, project_id: int):
        project, roles = project_get_for_user(user=request.user, project_id=project_id)
        require(roles, Action.VIEW)
        return Response(ProjectOutputSerializer(project, context={"roles": {project.pk: roles}}).data)

    @extend_schema(request=InputSerializer, responses=ProjectOutputSerializer, operation_id="projects_update")
    def patch(self, request, project_id: int):
        project, roles = project_get_for_user(user=request.user, project_id=project_id)
        ser = self.InputSerializer(data=request.data, partial=True)
        ser.is_valid(raise_exception=True)
        project = project_update(
            project=project, actor=request.user, roles=roles, changes=dict(ser.validated_data)
        )
        return Response(ProjectOutputSerializer(project, context={"roles": {project.pk: roles}}).data)
