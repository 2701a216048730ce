from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.views import APIView

from annotations.selectors.projects import audit_list, project_get_for_user
from hitl.core.apis.pagination import Pagination, paginated_response
from hitl.core.models import AuditEvent
from hitl.core.permissions import Action, require


class AuditOutputSerializer(serializers.ModelSerializer):
    actor = serializers.CharField(source="actor.username", default=None)

    class Meta:
        model = AuditEvent
        fields = ["id", "at", "actor", "action", "target_type", "target_id", "details"]


class AuditListApi(APIView):
    pagination_class = Pagination

    @extend_schema(responses=AuditOutputSerializer(many=True), operation_id="audit_list")
    def get(self, request, project_id: int):
        project, roles = project_get_for_user(user=request.user, project_id=project_id)
        require(roles, Action.VIEW_AUDIT)
        return paginated_response(
            request=request,
            view=self,
            queryset=audit_list(project=project),
            serialize=lambda page: AuditOutputSerializer(page, many=True).data,
        )
