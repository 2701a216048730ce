"""Label exports. Every endpoint needs Action.EXPORT (data managers, admins): annotators and ML engineers
get 403, non-members 404. The zip is streamed from the storage backend after the same checks."""

from django.core.files.storage import default_storage
from django.http import FileResponse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import exceptions, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from annotations.models import CaseSplit
from annotations.selectors.projects import project_get_for_user
from hitl.core.apis.pagination import Pagination, paginated_response
from hitl.core.apis.strict import StrictSerializer
from hitl.core.permissions import Action, require
from workers.models import ExportFormat, ExportJob, ExportLabels, ExportStatus
from workers.selectors.exports import export_job_get_for_user, export_job_list
from workers.selectors.waiting import waiting_for
from workers.services.exports.job import export_download_record, export_job_create


class ExportNotReady(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "export_not_ready"
    default_detail = "the export has not finished successfully"


class ExportGone(exceptions.APIException):
    status_code = status.HTTP_410_GONE
    default_code = "export_expired"
    default_detail = "the export has expired; create a new one"


class ExportJobOutputSerializer(serializers.ModelSerializer):
    waiting_for = serializers.SerializerMethodField(
        help_text="while queued: why it has not started (no worker for its queue, or what the workers are busy with)"
    )
    params = serializers.SerializerMethodField()
    masks = serializers.SerializerMethodField()
    download_url = serializers.SerializerMethodField()

    class Meta:
        model = ExportJob
        fields = [
            "id",
            "project",
            "status",
            "progress",
            "waiting_for",
            "params",
            "masks",
            "counts",
            "sha256",
            "size_bytes",
            "error",
            "created_at",
            "started_at",
            "finished_at",
            "expires_at",
            "download_url",
        ]

    def get_params(self, job: ExportJob) -> dict:
        return {k: v for k, v in job.params.items() if k != "revision_ids"}

    def get_masks(self, job: ExportJob) -> int:
        return len(job.params.get("revision_ids", []))

    def get_download_url(self, job: ExportJob) -> str | None:
        return f"/api/v1/exports/{job.pk}/download" if job.status == ExportStatus.SUCCEEDED else None

    def get_waiting_for(self, job: ExportJob) -> str | None:
        return waiting_for("export", job)


class ExportListApi(APIView):
    pagination_class = Pagination
    error_statuses = {"post": [409]}  # nothing to export

    class InputSerializer(StrictSerializer):
        formats = serializers.ListField(
            child=serializers.ChoiceField(choices=ExportFormat.choices), allow_empty=False
        )
        labels = serializers.ChoiceField(choices=ExportLabels.choices, default=ExportLabels.LATEST)
        split = serializers.ListField(
            child=serializers.ChoiceField(choices=CaseSplit.choices),
            required=False,
            default=list,
            help_text="only cases in these splits (empty = all)",
        )
        date_from = serializers.DateField(required=False, allow_null=True, default=None)
        date_to = serializers.DateField(required=False, allow_null=True, default=None)
        reader_ids = serializers.ListField(
            child=serializers.IntegerField(min_value=1), required=False, default=list
        )
        model_version_ids = serializers.ListField(
            child=serializers.IntegerField(min_value=1), required=False, default=list
        )
        include_images = serializers.BooleanField(default=False)

    @extend_schema(responses=ExportJobOutputSerializer(many=True), operation_id="exports_list")
    def get(self, request, project_id: int):
        project, roles = project_get_for_user(user=request.user, project_id=project_id)
        require(roles, Action.EXPORT)
        return paginated_response(
            request=request,
            view=self,
            queryset=export_job_list(project=project),
            serialize=lambda page: ExportJobOutputSerializer(page, many=True).data,
        )

    @extend_schema(
        request=InputSerializer, responses={201: ExportJobOutputSerializer}, operation_id="exports_create"
    )
    def post(self, request, project_id: int):
        project, roles = project_get_for_user(user=request.user, project_id=project_id)
        require(roles, Action.EXPORT)
        ser = self.InputSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        data = dict(ser.validated_data)
        data["splits"] = data.pop("split")
        job = export_job_create(project=project, requested_by=request.user, **data)
        return Response(ExportJobOutputSerializer(job).data, status=status.HTTP_201_CREATED)


class ExportDetailApi(APIView):
    @extend_schema(responses=ExportJobOutputSerializer, operation_id="exports_retrieve")
    def get(self, request, job_id: int):
        job, roles = export_job_get_for_user(user=request.user, job_id=job_id)
        require(roles, Action.EXPORT)
        return Response(ExportJobOutputSerializer(job).data)


class ExportDownloadApi(APIView):
    error_statuses = {"get": [409, 410]}  # not ready yet; expired

    @extend_schema(
        responses={(200, "application/zip"): OpenApiResponse(OpenApiTypes.BINARY, description="the zip")},
        operation_id="exports_download",
    )
    def get(self, request, job_id: int):
        job, roles = export_job_get_for_user(user=request.user, job_id=job_id)
        require(roles, Action.EXPORT)
        if job.status == ExportStatus.EXPIRED or job.expires_at and job.expires_at <= timezone.now():
            raise ExportGone()  # past its expiry the zip is gone, whether or not the sweep has run yet
        if job.status != ExportStatus.SUCCEEDED:
            raise ExportNotReady()
        export_download_record(job=job, actor=request.user)
        response = FileResponse(
            default_storage.open(job.result_path, "rb"),
            as_attachment=True,
            filename=f"export-{job.pk}.zip",
            content_type="application/zip",
        )
        response["X-Content-SHA256"] = job.sha256
        return response
