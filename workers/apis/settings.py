"""A project's machine-learning settings: every member reads them; changing them needs Action.SET_TRAINING
(ML engineers, admins)."""

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from annotations.selectors.projects import project_get_for_user
from hitl.core.apis.strict import StrictSerializer
from hitl.core.permissions import Action, require
from workers.apis.training import TrainingConfigField
from workers.models import QueryStrategy, TrainingSettings
from workers.selectors.settings import training_settings_for
from workers.services.training_config import DEFAULTS as TRAINING_DEFAULTS
from workers.services.training_settings import training_settings_update

MAX_AUTO_RETRAIN_EVERY = (
    100_000  # labels; the schema states the bound (the database column stops at 2**31 - 1)
)


class TrainingSettingsOutputSerializer(serializers.Serializer):
    query_strategy = serializers.ChoiceField(choices=QueryStrategy.choices)
    auto_retrain_every = serializers.IntegerField(
        min_value=0, max_value=MAX_AUTO_RETRAIN_EVERY, help_text="retrain after N new labels; 0 = off"
    )
    gating_tolerance = serializers.FloatField(
        min_value=0, max_value=1, help_text="a new model may lose at most this validation Dice"
    )
    training_config = TrainingConfigField()
    explain_methods_default = serializers.SerializerMethodField(
        help_text="the explanation methods precomputed when training_config names none"
    )

    def get_explain_methods_default(self, obj: TrainingSettings) -> list[str]:
        return list(TRAINING_DEFAULTS["explain_methods"])  # workers.ml.explain.policy.DEFAULT_METHODS


class TrainingSettingsApi(APIView):
    class InputSerializer(StrictSerializer):
        """The settings to change (at least one); the others keep their values."""

        query_strategy = serializers.ChoiceField(choices=QueryStrategy.choices, required=False)
        auto_retrain_every = serializers.IntegerField(
            min_value=0,
            max_value=MAX_AUTO_RETRAIN_EVERY,
            required=False,
            help_text="retrain after N new labels; 0 = off",
        )
        gating_tolerance = serializers.FloatField(
            min_value=0,
            max_value=1,
            required=False,
            help_text="a new model may lose at most this validation Dice",
        )
        training_config = TrainingConfigField(required=False)

    @extend_schema(
        responses=TrainingSettingsOutputSerializer, operation_id="projects_training_settings_retrieve"
    )
    def get(self, request, project_id: int):
        project, roles = project_get_for_user(user=request.user, project_id=project_id)
        require(roles, Action.VIEW)
        return Response(TrainingSettingsOutputSerializer(training_settings_for(project)).data)

    @extend_schema(
        request=InputSerializer,
        responses=TrainingSettingsOutputSerializer,
        operation_id="projects_training_settings_partial_update",
    )
    def patch(self, request, project_id: int):
        project, roles = project_get_for_user(user=request.user, project_id=project_id)
        require(roles, Action.SET_TRAINING)
        ser = self.InputSerializer(data=request.data, partial=True)
        ser.is_valid(raise_exception=True)
        settings = training_settings_update(
            project=project, actor=request.user, roles=roles, changes=dict(ser.validated_data)
        )
        return Response(TrainingSettingsOutputSerializer(settings).data)
