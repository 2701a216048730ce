from django.conf import settings
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from annotations.apis.errors import PayloadTooLarge
from annotations.apis.pagination import paginated_response
from annotations.models import CaseSplit, Image
from annotations.permissions import Action, require
from annotations.selectors.images import image_list
from annotations.selectors.projects import project_get_for_user
from annotations.services.ingest import image_import


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


class ImportOutputSerializer(serializers.Serializer):
    images = ImageOutputSerializer(many=True)
    duplicates = serializers.ListField(child=serializers.DictField())


def _read_upload(upload) -> bytes:
    if upload.size > settings.HITL_MAX_UPLOAD_BYTES:
        raise PayloadTooLarge(f"uploads are limited to {settings.HITL_MAX_UPLOAD_BYTES} bytes")
    return upload.read()


class ImageListApi(APIView):
    parser_classes = [MultiPartParser]

    class InputSerializer(serializers.Serializer):
        file = serializers.FileField(help_text="DICOM, zip of a DICOM series, PNG, TIFF or NIfTI")
        mask = serializers.FileField(required=False, help_text="optional reference mask (PNG/TIFF/NIfTI)")
        split = serializers.ChoiceField(choices=CaseSplit.choices, default=CaseSplit.POOL)

    @extend_schema(responses=ImageOutputSerializer(many=True), operation_id="images_list")
    def get(self, request, project_id: int):
        project, roles = project_get_for_user(user=request.user, project_id=project_id)
        require(roles, Action.VIEW)
        return paginated_response(
            request=request,
            view=self,
            queryset=image_list(project=project),
            serialize=lambda page: ImageOutputSerializer(page, many=True).data,
        )

    @extend_schema(
        request=InputSerializer, responses={201: ImportOutputSerializer}, operation_id="images_import"
    )
    def post(self, request, project_id: int):
        project, roles = project_get_for_user(user=request.user, project_id=project_id)
        require(roles, Action.IMPORT_IMAGES)
        for name in ("file", "mask"):
            if name in request.FILES and request.FILES[name].size > settings.HITL_MAX_UPLOAD_BYTES:
                raise PayloadTooLarge(f"uploads are limited to {settings.HITL_MAX_UPLOAD_BYTES} bytes")
        ser = self.InputSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        upload, mask = ser.validated_data["file"], ser.validated_data.get("mask")
        result = image_import(
            project=project,
            user=request.user,
            data=_read_upload(upload),
            filename=upload.name,
            mask_data=_read_upload(mask) if mask else None,
            mask_filename=mask.name if mask else "",
            split=ser.validated_data["split"],
        )
        out = ImportOutputSerializer({"images": result.images, "duplicates": result.duplicates})
        return Response(out.data, status=status.HTTP_201_CREATED if result.images else status.HTTP_200_OK)
