from django.contrib.auth import authenticate
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.authentication import TokenAuthentication
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView

from annotations.services.auth import token_issue


class TokenApi(APIView):
    """Exchange username + password for an API token (for scripts). Rate-limited."""

    permission_classes = [AllowAny]
    authentication_classes = [TokenAuthentication]  # gives 401 (not 403) on bad credentials
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "login"

    class InputSerializer(serializers.Serializer):
        username = serializers.CharField()
        password = serializers.CharField(style={"input_type": "password"})

    class OutputSerializer(serializers.Serializer):
        token = serializers.CharField()

    @extend_schema(request=InputSerializer, responses=OutputSerializer, operation_id="auth_token")
    def post(self, request):
        ser = self.InputSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        user = authenticate(request, **ser.validated_data)
        if user is None or not user.is_active:
            raise AuthenticationFailed("wrong username or password")
        return Response({"token": token_issue(user=user)})
