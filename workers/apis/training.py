"""Training runs, model versions and the learning curve. Everyone in the project may read them; starting,
cancelling, promoting, rolling back and downloading a version's weights (as a MONAI bundle) need
Action.TRAIN (ML engineers, admins)."""

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field, inline_serializer
from rest_framework import serializers, status
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from annotations.selectors.projects import project_get_for_user
from hitl.core.apis.pagination import Pagination, paginated_response
from hitl.core.apis.strict import StrictSerializer
from hitl.core.apis.uploads import guarded_upload_data
from hitl.core.permissions import Action, require
from workers.models import ModelVersion, TrainingRun
from workers.selectors.registry import (
    learning_curve,
    model_version_get_for_user,
    model_version_list,
    training_run_get_for_user,
    training_run_list,
)
from workers.selectors.waiting import waiting_for
from workers.services.model_export import model_version_bundle
from workers.services.model_import import model_bundle_import
from workers.services.registry import model_version_promote, model_version_rollback
from workers.services.training import training_run_cancel, training_run_start
from workers.services.training_config import BACKENDS, config_json_schema


@extend_schema_field(config_json_schema())
class TrainingConfigField(serializers.DictField):
    """Training overrides; the schema states every rule `training_config_validate` applies (the service
    checks them again)."""


class TrainingRunOutputSerializer(serializers.ModelSerializer):
    waiting_for = serializers.SerializerMethodField(
        help_text="while queued: why it has not started (no worker for its queue, or what the workers are busy with)"
    )
    requested_by = serializers.CharField(source="requested_by.username", allow_null=True, default=None)
    result_version_number = serializers.IntegerField(
        source="result_version.number", allow_null=True, default=None
    )
    eta_seconds = serializers.SerializerMethodField()
    labels_used = serializers.SerializerMethodField(
        help_text="mask revisions the run read (train, validation, test)"
    )

    class Meta:
        model = TrainingRun
        fields = [
            "id",
            "project",
            "status",
            "trigger",
            "requested_by",
            "base_version",
            "result_version",
            "result_version_number",
            "config",
            "seed",
            "label_policy",
            "progress",
            "epochs",
            "eta_seconds",
            "labels_used",
            "waiting_for",
            "outcome",
            "cancel_requested",
            "attempts",
            "created_at",
            "started_at",
            "finished_at",
            "heartbeat_at",
        ]

    def get_labels_used(self, run: TrainingRun) -> int:
        return len(run.revision_ids or [])

    def get_eta_seconds(self, run: TrainingRun) -> float | None:
        if run.status != "running" or not run.epochs:
            return None
        return run.epochs[-1].get("eta_seconds")

    def get_waiting_for(self, run: TrainingRun) -> str | None:
        return waiting_for("training run", run)


class TrainingRunDetailOutputSerializer(TrainingRunOutputSerializer):
    class Meta(TrainingRunOutputSerializer.Meta):
        fields = [*TrainingRunOutputSerializer.Meta.fields, "revision_ids"]


class ScoringProgressSerializer(serializers.Serializer):
    done = serializers.IntegerField(help_text="pool cases scored so far")
    total = serializers.IntegerField(help_text="pool cases this scoring covers")
    started_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)
    stopped = serializers.BooleanField(help_text="superseded, or the version stopped being active")


class ModelVersionOutputSerializer(serializers.ModelSerializer):
    parent_number = serializers.IntegerField(source="parent.number", allow_null=True, default=None)
    backend = serializers.ChoiceField(
        choices=BACKENDS, read_only=True, help_text="the model backend that trained or imported this version"
    )
    scoring = serializers.SerializerMethodField(
        help_text="the latest pool scoring by this version, chunk by chunk (null: never scored the pool)"
    )

    @extend_schema_field(ScoringProgressSerializer(allow_null=True))
    def get_scoring(self, version: ModelVersion) -> dict | None:
        state = version.scoring or {}
        if not state.get("run"):
            return None
        keys = ("done", "total", "started_at", "finished_at")
        return {**{k: state.get(k) for k in keys}, "stopped": bool(state.get("stopped"))}

    class Meta:
        model = ModelVersion
        fields = [
            "id",
            "project",
            "number",
            "state",
            "parent",
            "parent_number",
            "backend",
            "metrics",
            "config",
            "weights_sha256",
            "created_at",
            "promoted_at",
            "scoring",
        ]


class TrainingRunListApi(APIView):
    pagination_class = Pagination
    error_statuses = {"post": [409]}  # a run already open

    class InputSerializer(StrictSerializer):
        config = TrainingConfigField(required=False, default=dict)

    @extend_schema(responses=TrainingRunOutputSerializer(many=True), operation_id="training_runs_list")
    def get(self, request, project_id: int):
        project, roles = project_get_for_user(user=request.user, project_id=project_id)
        require(roles, Action.VIEW)
        return paginated_response(
            request=request,
            view=self,
            queryset=training_run_list(project=project),
            serialize=lambda page: TrainingRunOutputSerializer(page, many=True).data,
        )

    @extend_schema(
        request=InputSerializer,
        responses={201: TrainingRunDetailOutputSerializer},
        operation_id="training_runs_start",
    )
    def post(self, request, project_id: int):
        project, roles = project_get_for_user(user=request.user, project_id=project_id)
        require(roles, Action.TRAIN)
        ser = self.InputSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        run = training_run_start(
            project=project, requested_by=request.user, config_overrides=ser.validated_data["config"]
        )
        return Response(TrainingRunDetailOutputSerializer(run).data, status=status.HTTP_201_CREATED)


class TrainingRunDetailApi(APIView):
    @extend_schema(responses=TrainingRunDetailOutputSerializer, operation_id="training_runs_retrieve")
    def get(self, request, run_id: int):
        run, roles = training_run_get_for_user(user=request.user, run_id=run_id)
        require(roles, Action.VIEW)
        return Response(TrainingRunDetailOutputSerializer(run).data)


class TrainingRunCancelApi(APIView):
    error_statuses = {"post": [409]}  # the run has ended

    @extend_schema(
        request=None, responses=TrainingRunDetailOutputSerializer, operation_id="training_runs_cancel"
    )
    def post(self, request, run_id: int):
        run, roles = training_run_get_for_user(user=request.user, run_id=run_id)
        require(roles, Action.TRAIN)
        run = training_run_cancel(run=run, actor=request.user)
        return Response(TrainingRunDetailOutputSerializer(run).data)


class ModelVersionListApi(APIView):
    pagination_class = Pagination

    @extend_schema(responses=ModelVersionOutputSerializer(many=True), operation_id="model_versions_list")
    def get(self, request, project_id: int):
        project, roles = project_get_for_user(user=request.user, project_id=project_id)
        require(roles, Action.VIEW)
        return paginated_response(
            request=request,
            view=self,
            queryset=model_version_list(project=project),
            serialize=lambda page: ModelVersionOutputSerializer(page, many=True).data,
        )


class ModelVersionPromoteApi(APIView):
    error_statuses = {"post": [409]}  # not a candidate, gating

    @extend_schema(
        request=None, responses=ModelVersionOutputSerializer, operation_id="model_versions_promote"
    )
    def post(self, request, version_id: int):
        version, roles = model_version_get_for_user(user=request.user, version_id=version_id)
        require(roles, Action.TRAIN)
        version = model_version_promote(version=version, actor=request.user)
        return Response(ModelVersionOutputSerializer(version).data)


class ModelBundleImportApi(APIView):
    """Import a MONAI bundle as a model version: checked at once (400 with a code for a bundle that is
    refused, nothing stored), then measured on the validation cases and gated by a run on the train queue."""

    error_statuses = {"post": [409, 413, 507]}  # a run is open; over the upload limit; storage full
    parser_classes = [MultiPartParser]

    class InputSerializer(serializers.Serializer):
        file = serializers.FileField(help_text="the bundle as a zip: configs/, models/model.pt")

    @extend_schema(
        request=InputSerializer,
        responses={202: TrainingRunOutputSerializer},
        operation_id="model_bundles_import",
    )
    def post(self, request, project_id: int):
        project, roles = project_get_for_user(user=request.user, project_id=project_id)
        require(roles, Action.TRAIN)
        ser = self.InputSerializer(data=guarded_upload_data(request))
        ser.is_valid(raise_exception=True)
        upload = ser.validated_data["file"]
        run = model_bundle_import(project=project, data=upload.read(), actor=request.user)
        headers = {"Location": f"/api/v1/training-runs/{run.pk}"}
        return Response(
            TrainingRunOutputSerializer(run).data, status=status.HTTP_202_ACCEPTED, headers=headers
        )


class ModelVersionBundleApi(APIView):
    error_statuses = {"get": [409]}  # a version that has no bundle form (an RGB model)

    @extend_schema(
        responses={
            (200, "application/zip"): OpenApiResponse(
                OpenApiTypes.BINARY,
                description="the version as a MONAI bundle: configs/inference.json runs it with"
                " `python -m monai.bundle run` on NIfTI files; configs/metadata.json holds the label names"
                " and the version's provenance",
            )
        },
        operation_id="model_versions_bundle",
    )
    def get(self, request, version_id: int):
        version, roles = model_version_get_for_user(user=request.user, version_id=version_id)
        require(roles, Action.TRAIN)
        bundle = model_version_bundle(version=version, actor=request.user)
        response = HttpResponse(bundle.data, content_type="application/zip")
        response["Content-Disposition"] = f'attachment; filename="{bundle.filename}"'
        return response


class ModelVersionRollbackApi(APIView):
    error_statuses = {"post": [409]}  # nothing to roll back to

    @extend_schema(
        request=None, responses=ModelVersionOutputSerializer, operation_id="model_versions_rollback"
    )
    def post(self, request, project_id: int):
        project, roles = project_get_for_user(user=request.user, project_id=project_id)
        require(roles, Action.TRAIN)
        version = model_version_rollback(project=project, actor=request.user)
        return Response(ModelVersionOutputSerializer(version).data)


class LearningCurveApi(APIView):
    class OutputSerializer(serializers.Serializer):
        version_id = serializers.IntegerField()
        number = serializers.IntegerField()
        state = serializers.CharField()
        labelled_cases = serializers.IntegerField(allow_null=True)
        validation_dice = serializers.FloatField(allow_null=True)
        test_dice = serializers.FloatField(allow_null=True)
        dice_metric = serializers.CharField(
            allow_null=True,
            help_text="how the Dice was measured; null: an older per-slice mean, not comparable",
        )
        created_at = serializers.DateTimeField()
        promoted = serializers.BooleanField(
            help_text="the version was active at some time (the curve of the model readers were given)"
        )

    @extend_schema(
        responses=inline_serializer("LearningCurve", {"points": OutputSerializer(many=True)}),
        operation_id="learning_curve",
    )
    def get(self, request, project_id: int):
        project, roles = project_get_for_user(user=request.user, project_id=project_id)
        require(roles, Action.VIEW)
        return Response({"points": self.OutputSerializer(learning_curve(project=project), many=True).data})
