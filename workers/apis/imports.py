from django.conf import settings
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from annotations.models import CaseSplit, Image, ImportStatus
from annotations.models.imports import IMPORT_FILE_STATUSES
from annotations.selectors.images import (
    image_list,
    import_job_get_for_user,
    import_job_images,
    import_job_list,
)
from annotations.selectors.projects import project_get_for_user
from hitl.core.apis.errors import PayloadTooLarge
from hitl.core.apis.pagination import Pagination, paginated_response
from hitl.core.apis.uploads import guarded_upload_data
from hitl.core.permissions import Action, reads_blind, require
from workers.services.imports import import_job_create

_MULTIPART_OVERHEAD = 1 << 20


class ImageOutputSerializer(serializers.ModelSerializer):
    num_cases = serializers.IntegerField(read_only=True, required=False)

    class Meta:
        model = Image
        fields = [
            "id",
            "display_name",
            "source_kind",
            "modality",
            "shape",
            "dtype",
            "spacing",
            "window_presets",
            "content_hash",
            "study_uid",
            "series_uid",
            "status",
            "stats",
            "created_at",
            "num_cases",
        ]


class ImportErrorSerializer(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()
    status = serializers.IntegerField(help_text="the HTTP status this error would have had: 400, 409 or 413")


class ImportFileSerializer(serializers.Serializer):
    index = serializers.IntegerField(help_text="position in the upload (file names are never kept)")
    size = serializers.IntegerField()
    status = serializers.ChoiceField(choices=IMPORT_FILE_STATUSES)
    image_ids = serializers.ListField(child=serializers.IntegerField(), default=list)
    duplicates = serializers.ListField(child=serializers.DictField(), default=list)
    error = ImportErrorSerializer(allow_null=True, default=None)
    peak_rss_bytes = serializers.IntegerField(
        allow_null=True, default=None, help_text="peak memory of the parsing child"
    )
    seconds = serializers.FloatField(allow_null=True, default=None)


class ImportJobOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    project = serializers.IntegerField(source="project_id")
    status = serializers.ChoiceField(choices=ImportStatus.choices)
    progress = serializers.IntegerField(help_text="0..100")
    message = serializers.CharField()
    split = serializers.ChoiceField(choices=CaseSplit.choices)
    files = ImportFileSerializer(many=True)
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)


class ImportJobDetailSerializer(ImportJobOutputSerializer):
    images = ImageOutputSerializer(many=True, help_text="the images this import created")


def _refuse_oversized_body(request) -> None:
    """Before the multipart body is read: a body larger than every file at its limit cannot be valid."""
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    most = (settings.HITL_IMPORT_MAX_FILES + 1) * settings.HITL_MAX_UPLOAD_BYTES + _MULTIPART_OVERHEAD
    if length > most:
        raise PayloadTooLarge(f"uploads are limited to {settings.HITL_MAX_UPLOAD_BYTES} bytes per file")


class ImageListApi(APIView):
    pagination_class = Pagination
    error_statuses = {"post": [413, 507]}  # over the upload size limit; storage full
    parser_classes = [MultiPartParser]

    class InputSerializer(serializers.Serializer):
        file = serializers.ListField(
            child=serializers.FileField(),
            min_length=1,
            max_length=settings.HITL_IMPORT_MAX_FILES,
            help_text="one or more files: DICOM, zip of a DICOM series, PNG, TIFF or NIfTI",
        )
        mask = serializers.FileField(
            required=False, help_text="optional reference mask (PNG/TIFF/NIfTI) for a single image file"
        )
        split = serializers.ChoiceField(choices=CaseSplit.choices, default=CaseSplit.POOL)

    @extend_schema(responses=ImageOutputSerializer(many=True), operation_id="images_list")
    def get(self, request, project_id: int):
        project, roles = project_get_for_user(user=request.user, project_id=project_id)
        require(roles, Action.VIEW)
        return paginated_response(
            request=request,
            view=self,
            queryset=image_list(project=project, reader=request.user if reads_blind(roles) else None),
            serialize=lambda page: ImageOutputSerializer(page, many=True).data,
        )

    @extend_schema(
        request=InputSerializer, responses={202: ImportJobOutputSerializer}, operation_id="images_import"
    )
    def post(self, request, project_id: int):
        """Check the files' headers, stage them and answer 202 with the import job; the ingest worker
        parses them (GET /api/v1/imports/{id} shows progress and the outcome of every file)."""
        project, roles = project_get_for_user(user=request.user, project_id=project_id)
        require(roles, Action.IMPORT_IMAGES)
        _refuse_oversized_body(request)
        ser = self.InputSerializer(data=guarded_upload_data(request))
        ser.is_valid(raise_exception=True)
        job = import_job_create(
            project=project,
            user=request.user,
            files=ser.validated_data["file"],
            mask=ser.validated_data.get("mask"),
            split=ser.validated_data["split"],
        )
        headers = {"Location": f"/api/v1/imports/{job.pk}"}
        return Response(ImportJobOutputSerializer(job).data, status=status.HTTP_202_ACCEPTED, headers=headers)


class ImportJobListApi(APIView):
    pagination_class = Pagination

    @extend_schema(responses=ImportJobOutputSerializer(many=True), operation_id="imports_list")
    def get(self, request, project_id: int):
        project, roles = project_get_for_user(user=request.user, project_id=project_id)
        require(roles, Action.IMPORT_IMAGES)
        return paginated_response(
            request=request,
            view=self,
            queryset=import_job_list(project=project),
            serialize=lambda page: ImportJobOutputSerializer(page, many=True).data,
        )


class ImportJobDetailApi(APIView):
    @extend_schema(responses=ImportJobDetailSerializer, operation_id="imports_retrieve")
    def get(self, request, import_id: int):
        job, roles = import_job_get_for_user(user=request.user, import_id=import_id)
        require(roles, Action.IMPORT_IMAGES)
        data = ImportJobOutputSerializer(job).data
        data["images"] = ImageOutputSerializer(import_job_images(job=job), many=True).data
        return Response(data)
