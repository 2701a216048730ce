from django.contrib.auth import get_user_model
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from annotations.models import Membership, Role
from annotations.selectors.projects import membership_list, project_get_for_user
from annotations.services.projects import membership_add, membership_remove
from hitl.core.apis.pagination import Pagination, paginated_response
from hitl.core.apis.strict import StrictSerializer
from hitl.core.permissions import Action, require


class MembershipOutputSerializer(serializers.ModelSerializer):
    username = serializers.CharField(source="user.username")

    class Meta:
        model = Membership
        fields = ["id", "username", "role", "created_at"]


class MemberListApi(APIView):
    pagination_class = Pagination

    class InputSerializer(StrictSerializer):
        username = serializers.CharField(max_length=get_user_model()._meta.get_field("username").max_length)
        role = serializers.ChoiceField(choices=Role.choices)

    @extend_schema(responses=MembershipOutputSerializer(many=True), operation_id="members_list")
    def get(self, request, project_id: int):
        project, roles = project_get_for_user(user=request.user, project_id=project_id)
        require(roles, Action.VIEW)
        return paginated_response(
            request=request,
            view=self,
            queryset=membership_list(project=project),
            serialize=lambda page: MembershipOutputSerializer(page, many=True).data,
        )

    @extend_schema(
        request=InputSerializer, responses={201: MembershipOutputSerializer}, operation_id="members_add"
    )
    def post(self, request, project_id: int):
        project, roles = project_get_for_user(user=request.user, project_id=project_id)
        require(roles, Action.MANAGE_MEMBERS)
        ser = self.InputSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        membership = membership_add(project=project, actor=request.user, **ser.validated_data)
        return Response(MembershipOutputSerializer(membership).data, status=status.HTTP_201_CREATED)


class MemberDetailApi(APIView):
    error_statuses = {"delete": [409]}  # the project's last admin

    @extend_schema(responses={204: None}, operation_id="members_remove")
    def delete(self, request, project_id: int, membership_id: int):
        project, roles = project_get_for_user(user=request.user, project_id=project_id)
        require(roles, Action.MANAGE_MEMBERS)
        membership_remove(project=project, actor=request.user, membership_id=membership_id)
        return Response(status=status.HTTP_204_NO_CONTENT)
